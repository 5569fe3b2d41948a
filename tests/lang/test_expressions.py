"""Random expressions (hypothesis) compiled as kernels and compared with numpy: arithmetic,
Python's // and %, bitwise ops and shifts, min/max/abs, select and conditional expressions,
nested, on float64 and int64 — element by element and as SIMD vectors with a scalar tail."""
import ast
import importlib.util
import itertools
import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

SOURCE_DIR = Path(tempfile.mkdtemp(prefix="ember-lang-exprs-"))
_modules = itertools.count()


def _float_exprs():
    leaves = st.sampled_from(["a", "b", "c"]) | st.floats(-4, 4).map(lambda v: repr(round(v, 2)))

    def extend(sub):
        return st.one_of(
            st.tuples(st.sampled_from(["+", "-", "*"]), sub, sub).map(lambda t: f"({t[1]} {t[0]} {t[2]})"),
            st.tuples(st.sampled_from(["/", "//", "%"]), sub, sub).map(lambda t: f"({t[1]} {t[0]} (abs({t[2]}) + 1.5))"),
            st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            sub.map(lambda x: f"abs({x})"), sub.map(lambda x: f"(-{x})"), sub.map(lambda x: f"sqrt(abs({x}))"),
            st.tuples(sub, sub, sub, sub).map(lambda t: f"({t[0]} if {t[1]} < {t[2]} else {t[3]})"),
            st.tuples(sub, sub, sub).map(lambda t: f"select({t[0]} > {t[1]}, {t[0]}, {t[2]})"),
        )
    return st.recursive(leaves, extend, max_leaves=12).filter(lambda e: re.search(r"\b[abc]\b", e))


def _int_exprs():
    leaves = st.sampled_from(["p", "q"]) | st.integers(-20, 20).map(str)

    def extend(sub):
        return st.one_of(
            st.tuples(st.sampled_from(["+", "-", "*", "&", "|", "^"]), sub, sub).map(lambda t: f"({t[1]} {t[0]} {t[2]})"),
            st.tuples(st.sampled_from(["//", "%"]), sub, sub).map(lambda t: f"({t[1]} {t[0]} (abs({t[2]}) + 1))"),
            st.tuples(st.sampled_from(["<<", ">>"]), sub, st.integers(0, 5)).map(lambda t: f"({t[1]} {t[0]} {t[2]})"),
            st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            sub.map(lambda x: f"abs({x})"), sub.map(lambda x: f"(-{x})"),
            st.tuples(sub, sub, sub, sub).map(lambda t: f"({t[0]} if {t[1]} < {t[2]} else {t[3]})"),
        )
    return st.recursive(leaves, extend, max_leaves=12).filter(lambda e: re.search(r"\b[pq]\b", e))


def _compile(kind, expr):
    """A module with a scalar-loop kernel and a vectorised one computing `expr` (names of the
    inputs: a, b, c for float64; p, q for int64)."""
    names = "abc" if kind == "float64" else "pq"
    params = ", ".join(f"{v}_: Tensor[{kind}, 1]" for v in names)
    loads = "\n".join(f"        {v} = {v}_[i]" for v in names)
    vloads = "\n".join(f"        {v} = {v}_.load[w](i)" for v in names)
    src = f"""from ember.lang import *


@kernel
def scalar_loop({params}, out: Tensor[{kind}, 1]):
    for i in range(len(out)):
{loads}
        out[i] = {expr}


@kernel
def vectorised({params}, out: Tensor[{kind}, 1]):
    def body(i, w):
{vloads}
        out.store(i, SIMD[{kind}, w]({expr}))      # a splat if the expression folds to a constant
    vectorize(body, len(out), 8)
"""
    path = SOURCE_DIR / f"exprs_{next(_modules)}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _numpy(expr, env):
    """Evaluate the expression with numpy: conditional expressions and select become np.where."""
    tree = ast.parse(expr, mode="eval")

    class Where(ast.NodeTransformer):
        def visit_IfExp(self, node):
            self.generic_visit(node)
            return ast.Call(ast.Name("select", ast.Load()), [node.test, node.body, node.orelse], [])
    tree = ast.fix_missing_locations(Where().visit(tree))
    names = dict(env, min=np.minimum, max=np.maximum, abs=np.abs, sqrt=np.sqrt, select=np.where)
    with np.errstate(all="ignore"):
        return eval(compile(tree, "<expr>", "eval"), names)


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.filter_too_much])


@given(_float_exprs(), st.sampled_from([0, 1, 7, 17, 33]))
@SETTINGS
def test_random_float64_expressions(expr, n):
    m = _compile("float64", expr)
    g = np.random.default_rng(n)
    env = {v: g.standard_normal(n) * 3 for v in "abc"}
    want = np.broadcast_to(_numpy(expr, env), (n,))
    for kern in (m.scalar_loop, m.vectorised):
        out = np.full(n, np.nan)
        kern(env["a"], env["b"], env["c"], out)
        np.testing.assert_array_equal(out, want, err_msg=f"{kern.__name__}: {expr}")


@given(_int_exprs(), st.sampled_from([0, 1, 7, 17, 33]))
@SETTINGS
def test_random_int64_expressions(expr, n):
    m = _compile("int64", expr)
    g = np.random.default_rng(n)
    env = {v: g.integers(-1000, 1000, n) for v in "pq"}
    want = np.broadcast_to(_numpy(expr, env), (n,))
    for kern in (m.scalar_loop, m.vectorised):
        out = np.zeros(n, np.int64)
        kern(env["p"], env["q"], out)
        np.testing.assert_array_equal(out, want, err_msg=f"{kern.__name__}: {expr}")
