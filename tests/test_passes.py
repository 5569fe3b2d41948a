"""Golden before/after tests for every graph pass, on the printed IR (TVM-style)."""
import numpy as np

from ember.ir.printer import parse_graph, print_graph
from ember.passes import cse, dead_code, decompose, fold_constants, optimize, simplify


def check(pass_fn, before: str, expected: str):
    got = print_graph(pass_fn(parse_graph(before)))
    want = print_graph(parse_graph(expected))
    assert got == want, f"\n--- got ---\n{got}\n--- expected ---\n{want}"


def test_print_parse_roundtrip():
    text = """graph(%x: float32[batch,4], %w: float32[4,3]) {
  %0: float32[batch,3] = matmul(%x, %w)
  %1: float32[batch,3] = relu(%0)
  %2: float32[batch,1] = reduce_sum(%1) {axes=(1,), keepdims=1}
  return %1, %2
}"""
    assert print_graph(parse_graph(text)) == text.replace("(1,)", "[1]")


def test_fold_constants_evaluates_constant_subgraphs():
    check(fold_constants, """graph(%x: float32[2]) {
  %0: float32[2] = add(const<float32[2]: [1.0, 2.0]>, const<float32[2]: [3.0, 4.0]>)
  %1: float32[2] = mul(%x, %0)
  return %1
}""", """graph(%x: float32[2]) {
  %0: float32[2] = mul(%x, const<float32[2]: [4.0, 6.0]>)
  return %0
}""")


def test_fold_constants_resolves_symbolic_shape_chain():
    # Shape -> Gather -> Concat -> Reshape: the target shape becomes [batch, 2, 2] symbolically
    from ember.frontends.onnx.loader import load_onnx
    from onnx import TensorProto as T, helper, numpy_helper
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "zero1"], ["b1"]),
             helper.make_node("Concat", ["b1", "two2"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", T.FLOAT, None)],
                          [numpy_helper.from_array(np.array(0, np.int64), "zero"),
                           numpy_helper.from_array(np.array([0], np.int64), "zero1"),
                           numpy_helper.from_array(np.array([2, 2], np.int64), "two2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    graph = optimize(load_onnx(m))
    assert print_graph(graph) == """graph(%x: float32[batch,4]) {
  %0: float32[batch,2,2] = reshape(%x) {shape=[batch,2,2]}
  return %0
}"""


def test_decompose_softmax_into_primitives():
    # not over the last axis: no library kernel applies, so it decomposes
    check(decompose, """graph(%x: float32[8,n]) {
  %0: float32[8,n] = softmax(%x) {axis=0}
  return %0
}""", """graph(%x: float32[8,n]) {
  %0: float32[1,n] = reduce_max(%x) {axes=(0,), keepdims=1}
  %1: float32[8,n] = sub(%x, %0)
  %2: float32[8,n] = exp(%1)
  %3: float32[1,n] = reduce_sum(%2) {axes=(0,), keepdims=1}
  %4: float32[8,n] = div(%2, %3)
  return %4
}""")


def test_decompose_keeps_softmax_and_layer_norm_with_library_kernels():
    import ember.kernels  # noqa: F401  (registers the kernel-language implementations)
    same = """graph(%x: float32[n,8], %s: float32[8], %b: float32[8]) {
  %0: float32[n,8] = softmax(%x) {axis=1}
  %1: float32[n,8] = layer_norm(%0, %s, %b) {axis=-1, epsilon=1e-05}
  return %1
}"""
    check(decompose, same, same)


def test_matmul_epilogue_fuses_when_result_feeds_other_kernels():
    from ember.schedule.fusion import schedule
    g = parse_graph("""graph(%x: float32[n,8], %w: float32[8,8], %b: float32[8], %r: float32[n,8]) {
  %0: float32[n,8] = matmul(%x, %w)
  %1: float32[n,8] = add(%0, %b)
  %2: float32[n,8] = add(%1, %r)
  %3: float32[n,8] = matmul(%2, %w)
  %4: float32[n,8] = mul(%2, %3)
  return %4
}""")
    kinds = [(k.kind, [n.op for n in k.nodes]) for k in schedule(g).kernels]
    assert kinds == [("matmul", ["matmul", "add", "add"]), ("matmul", ["matmul", "mul"])]


def test_library_kernel_takes_a_pointwise_epilogue():
    """A layer norm (a library kernel that writes each element once) stores the scale and
    residual after it; a softmax (which normalises its output in place) does not."""
    import ember.kernels  # noqa: F401  (registers the library kernels)
    from ember.schedule.fusion import schedule
    g = parse_graph("""graph(%x: float32[n,8], %s: float32[8], %b: float32[8], %r: float32[n,8]) {
  %0: float32[n,8] = layer_norm(%x, %s, %b) {axis=-1, epsilon=1e-05}
  %1: float32[n,8] = mul(%0, %s)
  %2: float32[n,8] = add(%1, %r)
  %3: float32[n,8] = softmax(%2) {axis=-1}
  %4: float32[n,8] = mul(%3, %s)
  return %4
}""")
    kinds = [(k.kind, [n.op for n in k.nodes]) for k in schedule(g).kernels]
    assert kinds == [("library", ["layer_norm", "mul", "add"]), ("library", ["softmax"]), ("pointwise", ["mul"])]


def test_reshaped_output_is_stored_by_the_epilogue():
    """A graph output that is a reshape of an epilogue (a Conv's NCHW view of its GEMM) is a
    view: the fused matmul kernel stores straight into the output buffer. A second output
    viewing the same value, or one viewing an input, still gets a copy."""
    from ember.schedule.fusion import schedule
    g = parse_graph("""graph(%x: float32[4,6], %w: float32[6,8]) {
  %0: float32[4,8] = matmul(%x, %w)
  %1: float32[4,8] = relu(%0)
  %2: float32[2,2,8] = reshape(%1) {shape=(2,2,8)}
  %3: float32[32] = reshape(%1) {shape=(32,)}
  %4: float32[24] = reshape(%x) {shape=(24,)}
  return %2, %3, %4
}""")
    s = schedule(g)
    kinds = [(k.kind, [n.op for n in k.nodes]) for k in s.kernels]
    assert kinds == [("matmul", ["matmul", "relu"]), ("copy", []), ("copy", [])]
    assert [v.name for v in s.out_alias.values()] == [g.outputs[0].name]


def test_fuse_attention_takes_q_and_v_in_their_projection_layout():
    """QK^T * scale + mask -> softmax -> @V between [b,h,s,d] transposes becomes one
    attention op on Q and V as the projections laid them out; the transposes cancel."""
    import ember.kernels  # noqa: F401  (registers the attention library kernel)
    from ember.passes.attention import fuse_attention
    check(lambda g: dead_code(simplify(fuse_attention(g))), """graph(%q: float32[b,4,2,16], %k: float32[b,2,16,6], %v: float32[b,6,2,16], %m: float32[b,1,1,6]) {
  %0: float32[b,2,4,16] = transpose(%q) {perm=(0,2,1,3)}
  %1: float32[b,2,4,6] = matmul(%0, %k)
  %2: float32[b,2,4,6] = mul(%1, const<float32[]: [0.25]>)
  %3: float32[b,2,4,6] = add(%2, %m)
  %4: float32[b,2,4,6] = softmax(%3) {axis=3, log=0}
  %5: float32[b,2,6,16] = transpose(%v) {perm=(0,2,1,3)}
  %6: float32[b,2,4,16] = matmul(%4, %5)
  %7: float32[b,4,2,16] = transpose(%6) {perm=(0,2,1,3)}
  return %7
}""", """graph(%q: float32[b,4,2,16], %k: float32[b,2,16,6], %v: float32[b,6,2,16], %m: float32[b,1,1,6]) {
  %0: float32[b,4,2,16] = attention(%q, %k, %v, %m) {scale=0.25}
  return %0
}""")


def test_fuse_attention_takes_the_dynamo_exporters_sdpa():
    """torch's dynamo exporter writes SDPA with Q and K^T each scaled by d^-1/4 and the
    probabilities NaN-guarded (IsNaN as not(p == p)): one attention op, scale the product,
    rows a mask hides entirely zeroed (nan_zero)."""
    import ember.kernels  # noqa: F401
    from ember.passes.attention import fuse_attention
    check(lambda g: dead_code(simplify(fuse_attention(g))), """graph(%q: float32[b,4,2,16], %k: float32[b,2,16,6], %v: float32[b,6,2,16], %m: float32[b,2,4,6]) {
  %0: float32[b,2,4,16] = transpose(%q) {perm=(0,2,1,3)}
  %1: float32[b,2,4,16] = mul(%0, const<float32[]: [0.5]>)
  %2: float32[b,2,16,6] = mul(%k, const<float32[]: [0.5]>)
  %3: float32[b,2,4,6] = matmul(%1, %2)
  %4: float32[b,2,4,6] = add(%3, %m)
  %5: float32[b,2,4,6] = softmax(%4) {axis=3, log=0}
  %6: bool[b,2,4,6] = eq(%5, %5)
  %7: bool[b,2,4,6] = not(%6)
  %8: float32[b,2,4,6] = where(%7, const<float32[]: [0.0]>, %5)
  %9: float32[b,2,6,16] = transpose(%v) {perm=(0,2,1,3)}
  %10: float32[b,2,4,16] = matmul(%8, %9)
  %11: float32[b,4,2,16] = transpose(%10) {perm=(0,2,1,3)}
  return %11
}""", """graph(%q: float32[b,4,2,16], %k: float32[b,2,16,6], %v: float32[b,6,2,16], %m: float32[b,2,4,6]) {
  %0: float32[b,4,2,16] = attention(%q, %k, %v, %m) {scale=0.25, nan_zero=1}
  return %0
}""")


def test_fuse_attention_leaves_other_softmax_products_alone():
    """Softmax over a non-last axis, or a head size the kernel does not take, stays as is."""
    import ember.kernels  # noqa: F401
    from ember.passes.attention import fuse_attention
    same = """graph(%p: float32[1,2,4,6], %k: float32[1,2,12,6], %v: float32[1,2,6,12]) {
  %0: float32[1,2,4,6] = softmax(%p) {axis=2, log=0}
  %1: float32[1,2,4,12] = matmul(%0, %v)
  return %1
}"""
    check(fuse_attention, same, same)


def test_decompose_gemm_with_transpose_and_bias():
    check(decompose, """graph(%x: float32[n,3], %w: float32[4,3], %c: float32[4]) {
  %0: float32[n,4] = gemm(%x, %w, %c) {transB=1}
  return %0
}""", """graph(%x: float32[n,3], %w: float32[4,3], %c: float32[4]) {
  %0: float32[3,4] = transpose(%w) {perm=(1,0)}
  %1: float32[n,4] = matmul(%x, %0)
  %2: float32[n,4] = add(%1, %c)
  return %2
}""")


def test_simplify_removes_identities_and_merges_views():
    check(lambda g: dead_code(simplify(g)), """graph(%x: float32[2,3,4]) {
  %0: float32[2,3,4] = add(%x, const<float32[]: [0.0]>)
  %1: float32[6,4] = reshape(%0) {shape=(6,4)}
  %2: float32[24] = reshape(%1) {shape=(24,)}
  %3: float32[4,3,2] = transpose(%x) {perm=(2,1,0)}
  %4: float32[2,3,4] = transpose(%3) {perm=(2,1,0)}
  %5: float32[2,3,4] = mul(%4, const<float32[]: [1.0]>)
  return %2, %5
}""", """graph(%x: float32[2,3,4]) {
  %0: float32[24] = reshape(%x) {shape=(24,)}
  return %0, %x
}""")


def test_cse_merges_equal_nodes():
    check(cse, """graph(%x: float32[4]) {
  %0: float32[4] = exp(%x)
  %1: float32[4] = exp(%x)
  %2: float32[4] = add(%0, %1)
  return %2
}""", """graph(%x: float32[4]) {
  %0: float32[4] = exp(%x)
  %1: float32[4] = add(%0, %0)
  return %1
}""")


def test_dead_code_drops_unused_nodes():
    check(dead_code, """graph(%x: float32[4]) {
  %0: float32[4] = exp(%x)
  %1: float32[4] = log(%x)
  return %0
}""", """graph(%x: float32[4]) {
  %0: float32[4] = exp(%x)
  return %0
}""")


def test_sink_reshape_moves_pointwise_to_the_source_shape():
    # a conv GEMM's [n, g, Cout, pixels] result reshaped to NCHW, then BatchNorm scale,
    # residual add and ReLU: all move before the reshape (so they fuse as the GEMM epilogue);
    # the const over only part of the [2,3] <-> [6] dim group cannot, and stays after it
    from ember.passes.basic import sink_reshape
    check(lambda g: dead_code(sink_reshape(g)), """graph(%x: float32[2,1,4,6], %r: float32[2,4,2,3]) {
  %0: float32[2,4,2,3] = reshape(%x) {shape=(2,4,2,3)}
  %1: float32[2,4,2,3] = mul(%0, const<float32[4,1,1]: [1.0, 2.0, 3.0, 4.0]>)
  %2: float32[2,4,2,3] = add(%1, %r)
  %3: float32[2,4,2,3] = relu(%2)
  %4: float32[2,4,2,3] = add(%3, const<float32[3]: [1.0, 2.0, 3.0]>)
  return %3, %4
}""", """graph(%x: float32[2,1,4,6], %r: float32[2,4,2,3]) {
  %0: float32[2,1,4,6] = mul(%x, const<float32[1,1,4,1]: [1.0, 2.0, 3.0, 4.0]>)
  %1: float32[2,1,4,6] = reshape(%r) {shape=(2,1,4,6)}
  %2: float32[2,1,4,6] = add(%0, %1)
  %3: float32[2,1,4,6] = relu(%2)
  %4: float32[2,4,2,3] = reshape(%3) {shape=(2,4,2,3)}
  %5: float32[2,4,2,3] = add(%4, const<float32[3]: [1.0, 2.0, 3.0]>)
  return %4, %5
}""")


def test_dim_groups_align_shapes():
    from ember.ir import symbolic as S
    from ember.passes.basic import _dim_groups
    n = S.sym("n")
    assert _dim_groups((n, 1, 64, 3136), (n, 64, 56, 56)) == [([0], [0]), ([1, 2], [1]), ([3], [2, 3])]
    assert _dim_groups((6, 4), (4, 6)) == [([0, 1], [0, 1])]     # one group: only whole-group broadcasts move
    assert _dim_groups((n, 4), (4, n)) is None


def test_a_window_is_not_recomputed_by_a_larger_consumer():
    """A max pool read by the next conv's im2col (each element k*k times) is stored once,
    not recomputed at every read; a reduction whose result broadcasts (a mean per row) is
    still computed inside its consumer."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from ember.runtime.compiler import compile_model
    from tests.ops.harness import run_engine, run_reference
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool"),
             helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2], name="conv")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 17, 17])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    c = compile_model(m.SerializeToString(), use_cache=False)
    with_pool = [name for name, kind, onnx_nodes in c.kernel_info if "pool" in onnx_nodes]
    assert with_pool and not any("im2col" in name for name in with_pool), c.kernel_info
    x = np.random.default_rng(1).standard_normal((1, 3, 17, 17)).astype(np.float32)
    np.testing.assert_allclose(run_engine(m, {"x": x})[0], run_reference(m, {"x": x})[0], rtol=1e-4, atol=1e-4)


def _kernels(model):
    from ember.frontends.onnx.loader import load_onnx
    from ember.schedule.fusion import schedule
    return [(k.kind, [n.op for n in k.nodes]) for k in schedule(optimize(load_onnx(model))).kernels]


def test_reshapes_between_moves_fuse_into_one_kernel():
    """A strided ConvTranspose spreads each tap's plane with reshape -> pad -> reshape: the
    reshapes are computed inline (dividing by the constant stride), so the taps, the pads
    and the bias are one kernel after the GEMM, with no zero-stuffed image stored."""
    from onnx import TensorProto as T, helper, numpy_helper
    w = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 0, 0])],
                          "g", [helper.make_tensor_value_info("x", T.FLOAT, ["n", 8, "h", "w"])],
                          [helper.make_tensor_value_info("y", T.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.ones(4, np.float32), "b")])
    kinds = _kernels(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert [k for k, _ in kinds] == ["matmul", "pointwise"], kinds
    assert kinds[1][1].count("pad") == 2 * 9 + 1 and "reshape" in kinds[1][1]


def test_a_window_stores_its_computed_input_and_keeps_moves_inline():
    """A 3x3 max pool reads each element up to 9 times: the exp before it is stored once
    rather than recomputed at every read; the pool's own padding stays inline."""
    from onnx import TensorProto as T, helper
    g = helper.make_graph([helper.make_node("Exp", ["x"], ["e"]),
                           helper.make_node("MaxPool", ["e"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                          "g", [helper.make_tensor_value_info("x", T.FLOAT, ["n", 8, "h", "w"])],
                          [helper.make_tensor_value_info("y", T.FLOAT, None)])
    kinds = _kernels(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert kinds[0] == ("pointwise", ["exp"]) and "exp" not in kinds[-1][1], kinds
