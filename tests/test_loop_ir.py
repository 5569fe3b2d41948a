"""The loop-IR verifier: malformed kernels are refused with the kernel and statement named,
and every kernel the basket's lowerings produce passes (the suite runs it on all of them)."""
import os

import pytest

from ember.codegen import loop_ir as L
from ember.errors import LoopIRError

i, j = L.Var("i"), L.Var("j")
F = "float32"


def k(*body):
    return L.Kernel("k_test", list(body))


GOOD = k(L.Decl("acc", L.Broadcast(L.Const(0.0, F), 16, F), lanes=16),
         L.For(i, L.Const(0, "int64"), L.SizeRef(0), [
             L.Assign("acc", L.Fma(L.VLoad(0, i, 16, F), L.Broadcast(L.Load(1, i, F), 16, F), L.Local("acc", F), F)),
             L.For(j, L.Const(0, "int64"), L.Const(4, "int64"), [L.Store(2, L.Bin("add", i, j, "int64"), L.Const(1.0, F))],
                   parallel=True)], parallel=True),
         L.VStore(2, L.Const(0, "int64"), L.Local("acc", F), L.LaneMask(L.Const(0, "int64"), L.SizeRef(0), 16)))


def test_a_well_formed_kernel_passes():
    L.verify(GOOD, {0: None, 1: None, 2: None})
    L.verify(GOOD)


@pytest.mark.parametrize("kernel, message", [
    (k(L.Store(0, i, L.Const(1.0, F))), "variable 'i' used outside its loop"),
    (k(L.Assign("x", L.Const(1.0, F))), "assignment to 'x', which is not declared"),
    (k(L.Store(0, L.Const(0, "int64"), L.Local("y", F))), "local 'y' read before it is declared"),
    (k(L.Store(7, L.Const(0, "int64"), L.Const(1.0, F))), "buffer buf7 is not one of the module's"),
    (k(L.VStore(0, L.Const(0, "int64"), L.VLoad(0, L.Const(0, "int64"), 16, F),
                L.LaneMask(L.Const(0, "int64"), L.SizeRef(0), 8))), "operands of [8, 16] lanes"),
    (k(L.Decl("a", L.VLoad(0, L.Const(0, "int64"), 8, F), lanes=16)), "declared with 16 lanes from a 8-lane value"),
    (k(L.Store(0, L.Const(0, "int64"), L.Bin("add", L.Const(1.0, "float64"), L.Const(1.0, F), F))),
     "add of float64 into float32"),
    (k(L.Break()), "break/continue outside the loop"),
    (k(L.For(i, L.Const(0, "int64"), L.Const(4, "int64"), [], step=0)), "a loop with step 0"),
])
def test_malformed_kernels_are_refused(kernel, message):
    with pytest.raises(LoopIRError, match="kernel 'k_test'") as e:
        L.verify(kernel, {0: None})
    assert message in str(e.value)


def test_the_suite_verifies_every_kernel():
    assert os.environ.get("EMBER_VERIFY") == "1"
    from ember.codegen import llvm
    assert llvm.VERIFY
