"""CI-sized fuzzing run (fixed seed, 200 cases, about 30 s on 2 cores): no crash, hang,
non-EmberError, mismatch or leniency except the known Ember bugs listed in KNOWN, each of
which is an xfail test that starts passing once the bug is fixed. The long run is
`python -m bench.fuzz` (see bench/fuzz.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from . import fuzzer

CASES, SEED = 200, 0


@dataclass(frozen=True)
class Known:
    id: str
    kinds: tuple
    op: str | None        # the finding's op, or None for any
    where: str | None     # a substring of the innermost Ember frame, or None for any
    reason: str

    def matches(self, f):
        return (f["kind"] in self.kinds and (self.op is None or f["op"] == self.op)
                and (self.where is None or self.where in (f["where"] or "")))


# Real Ember bugs found by this harness and reported (being fixed in ember/ by others).
KNOWN = (
    Known("symbolic-broadcast", ("mismatch", "lenient"), "Add", None,
          "Add of [n] and [m]: ember/ir/ops.py broadcast_shapes keeps the first symbol and nothing checks "
          "n == m or one of them is 1 at run time (wrong output shape, or results for feeds ORT rejects)"),
    Known("malformed-node-converter", ("non_ember_exception",), None, "frontends/onnx/converters.py",
          "malformed nodes (missing, mistyped or extra attributes and inputs) raise bare "
          "KeyError/TypeError/IndexError/ValueError/AttributeError in the ONNX converters"),
    Known("malformed-node-axis", ("non_ember_exception",), None, "ir/ops.py",
          "a list/tensor/None 'axis' attribute reaches ember/ir/ops.py norm_axis: bare TypeError"),
    Known("malformed-node-dtype", ("non_ember_exception",), None, "ir/dtypes.py",
          "Cast with a non-int 'to' attribute: ember/ir/dtypes.py from_onnx raises TypeError (unhashable)"),
    Known("malformed-node-codegen", ("non_ember_exception",), None, "ember/codegen/",
          "nodes that pass import unchecked (MatMul with 3 inputs, string strides, Where/Greater on mixed "
          "dtypes, float axes) fail in ember/codegen (lower_matmul, iconst, llvm _expr/_canon) with "
          "ValueError/AssertionError/RecursionError"),
)


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    s = fuzzer.run_fuzz(CASES, SEED, tmp_path_factory.mktemp("fuzz-findings"))
    print("\n" + fuzzer.summary_table(s))
    return s


def test_fuzz_ran_enough(summary):
    assert summary["cases"] == CASES
    # the seeds must mostly compile and agree, or the fuzzer tests nothing
    assert summary["counts"].get("ok", 0) >= CASES // 5


def test_no_unknown_findings(summary):
    unknown = [f for f in summary["findings"] if not any(k.matches(f) for k in KNOWN)]
    assert not unknown, "new fuzz findings (reproducers in {}):\n{}".format(
        summary["findings_dir"], "\n".join(f"{f['kind']} {f['op']} {f['exception']}: {f['detail'][:200]} "
                                           f"-> {f['reproducer']}" for f in unknown))


@pytest.mark.parametrize("known", [pytest.param(k, id=k.id, marks=pytest.mark.xfail(reason=k.reason, strict=False))
                                   for k in KNOWN])
def test_known_bug_fixed(summary, known):
    hits = [f for f in summary["findings"] if known.matches(f)]
    assert not hits, f"{known.reason}; reproducer: {hits[0]['reproducer']}" if hits else ""
