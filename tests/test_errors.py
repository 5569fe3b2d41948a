"""Bad input raises an EmberError naming what was wrong and what was expected; the process
stays usable afterwards."""
import numpy as np
import pytest
from onnx import TensorProto as T, helper

import ember
from tests.util import make_model, mlp_model


@pytest.fixture(scope="module")
def sess():
    return ember.InferenceSession(mlp_model())


def test_unknown_input_name(sess):
    with pytest.raises(ember.InvalidInputError, match=r"unknown input name\(s\) \['y'\].*'x' float32\[batch,64\]"):
        sess.run(None, {"y": np.zeros((1, 64), np.float32)})


def test_missing_input():
    m = make_model([helper.make_node("Add", ["a", "b"], ["c"])],
                   [("a", T.FLOAT, [3]), ("b", T.FLOAT, [3])], [("c", T.FLOAT, [3])])
    s = ember.InferenceSession(m)
    with pytest.raises(ember.InvalidInputError, match=r"missing input\(s\) \['b'\]"):
        s.run(None, {"a": np.ones(3, np.float32)})


def test_wrong_dtype(sess):
    with pytest.raises(ember.InvalidInputError, match=r"input 'x' has dtype float64, expected float32"):
        sess.run(None, {"x": np.zeros((2, 64))})


def test_wrong_rank(sess):
    with pytest.raises(ember.InvalidInputError, match=r"input 'x' has rank 1 .* expected rank 2"):
        sess.run(None, {"x": np.zeros(64, np.float32)})


def test_mismatched_fixed_dim(sess):
    with pytest.raises(ember.InvalidInputError, match=r"input 'x' has size 63 in dimension 1, expected 64"):
        sess.run(None, {"x": np.zeros((2, 63), np.float32)})


def test_inconsistent_symbolic_dims():
    m = make_model([helper.make_node("Add", ["a", "b"], ["c"])],
                   [("a", T.FLOAT, ["n"]), ("b", T.FLOAT, ["n"])], [("c", T.FLOAT, ["n"])])
    s = ember.InferenceSession(m)
    with pytest.raises(ember.InvalidInputError, match=r"input 'b' has size 4 .*'n'.* input 'a'"):
        s.run(None, {"a": np.ones(3, np.float32), "b": np.ones(4, np.float32)})


def test_unknown_output_name(sess):
    with pytest.raises(ember.InvalidInputError, match="unknown output name 'nope'"):
        sess.run(["nope"], {"x": np.zeros((1, 64), np.float32)})


def test_corrupt_bytes():
    with pytest.raises(ember.ModelLoadError, match="not a valid ONNX model"):
        ember.InferenceSession(b"\x08\x07garbage\xff\xff\xff")


def test_truncated_file(tmp_path):
    data = mlp_model()
    p = tmp_path / "m.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ember.ModelLoadError, match="m.onnx"):
        ember.InferenceSession(str(p))


def test_missing_file(tmp_path):
    with pytest.raises(ember.ModelLoadError, match="does not exist"):
        ember.InferenceSession(str(tmp_path / "nope.onnx"))


def test_every_unsupported_node_listed():
    m = make_model([helper.make_node("Det", ["x"], ["a"], name="nz"),
                    helper.make_node("Relu", ["x"], ["r"], name="ok"),
                    helper.make_node("DeformConv", ["x"], ["v"], name="uniq"),
                    helper.make_node("Foo", ["x"], ["f"], name="custom", domain="my.domain")],
                   [("x", T.FLOAT, [4]), ("k", T.INT64, [1])], [("r", T.FLOAT, [4])])
    with pytest.raises(ember.UnsupportedOpError) as e:
        ember.InferenceSession(m)
    msg = str(e.value)
    assert "3 node(s)" in msg
    for frag in ("'nz' (Det)", "'uniq' (DeformConv)", "'custom' (my.domain.Foo)"):
        assert frag in msg
    assert [n for n, _, _ in e.value.nodes] == ["nz", "uniq", "custom"]


def test_shape_error_names_node():
    m = make_model([helper.make_node("MatMul", ["a", "b"], ["c"], name="mm1")],
                   [("a", T.FLOAT, [2, 3]), ("b", T.FLOAT, [4, 5])], [("c", T.FLOAT, None)])
    with pytest.raises(ember.ShapeError, match="mm1"):
        ember.InferenceSession(m)


def test_data_dependent_shape_is_reported():
    # the target shape is computed from a tensor of symbolic size: no small graph input
    # the session could compile a variant per value of (tests/test_backend.py)
    m = make_model([helper.make_node("Cast", ["s"], ["si"], to=T.INT64),
                    helper.make_node("Reshape", ["x", "si"], ["y"], name="dyn")],
                   [("x", T.FLOAT, [4]), ("s", T.FLOAT, ["n"])], [("y", T.FLOAT, None)])
    with pytest.raises(ember.UnsupportedOpError, match="'dyn' \\(Reshape\\).*run time"):
        ember.InferenceSession(m)


def test_process_stays_usable_after_errors(sess):
    for bad in ({"x": np.zeros((1, 3), np.float32)}, {"q": 1}, {}):
        with pytest.raises(ember.EmberError):
            sess.run(None, bad)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    assert sess.run(None, {"x": x})[0].shape == (3, 64)


def test_cli_prints_error_not_traceback(tmp_path, capsys):
    from ember.cli.main import main
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"not a model")
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert "ember: error:" in err and "Traceback" not in err
