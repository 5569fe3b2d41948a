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
