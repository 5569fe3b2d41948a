import math

from hypothesis import given, strategies as st

from ember.ir import symbolic as S


def test_constants_collapse_to_int():
    b = S.sym("b")
    assert (b - b) == 0 and isinstance(b - b, int)
    assert S.floordiv(b * 12 * 64, 64) == b * 12
    assert S.floordiv(b * 768, b) == 768


def test_decisions_use_positive_symbols():
    b = S.sym("b")
    assert (b + 1 > 0) is True
    assert S.smax(b, 0) == b
    assert S.smin(b - 1, b) == b - 1


@given(st.integers(1, 50), st.integers(1, 50), st.integers(1, 9))
def test_evaluate_matches_python(x, y, k):
    a, b = S.sym("a"), S.sym("b")
    env = {"a": x, "b": y}
    for expr, want in ((a * b + 3, x * y + 3), (S.floordiv(a * b + k, k), (x * y + k) // k),
                       (S.mod(a + 7, k), (x + 7) % k), (S.smax(a - b, 0), max(x - y, 0)),
                       (S.smin(a, b), min(x, y))):
        assert S.evaluate(expr, env) == want
        assert S.evaluate(S.decode(S.encode(expr)), env) == want


def test_an_integer_multiple_of_a_sum_divides_exactly():
    h = S.sym("h")
    assert S.floordiv(16 * h + 16, 8 * h + 8) == 2 and S.mod(16 * h + 16, 8 * h + 8) == 0
    assert S.mod(16 * h + 15, 8 * h + 8) != 0           # not a multiple: stays symbolic


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4))
def test_reshape_groups_pair_runs_of_equal_size(x, y, k):
    h, w = S.sym("h"), S.sym("w")
    assert S.reshape_groups((1, 24, h, 1, w, 1), (1, 24, h, w)) == [([1], [1]), ([2], [2]), ([4], [3])]
    assert S.reshape_groups((2, 2 * h, 2 * w), (2, h, 2, w, 2)) == [([0], [0]), ([1], [1, 2]), ([2], [3, 4])]
    assert S.reshape_groups((h * w, 3), (h, w, 3)) == [([0], [0, 1]), ([1], [2])]
    assert S.reshape_groups((h, w), (w, h)) is None                   # no run of equal size
    # static sizes: every run's sizes multiply to the same count, and the runs cover the dims
    out, inp = (x * k, y), (x, k * y)
    groups = S.reshape_groups(out, inp)
    assert groups is not None
    for go, gi in groups:
        assert math.prod(out[i] for i in go) == math.prod(inp[i] for i in gi)
    assert sorted(i for go, _ in groups for i in go) == [i for i, d in enumerate(out) if d != 1]
