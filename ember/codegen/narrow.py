"""Conversions between the narrow storage types (bfloat16, the float8s, float4e2m1, the
sub-byte ints) and the types kernels compute them in, emitted as scalar LLVM IR.

A narrow value is held as its bits (ml_dtypes' layout: bfloat16 in an i16, every other type
in the low bits of an i8). Decoding a float8 or float4 reads a 256-entry table built from
ml_dtypes, so it is exact by construction; encoding rounds to nearest even in one step from
float32, with each type's overflow, NaN and signed-zero rules (those ml_dtypes and ONNX's
Cast apply)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ..ir.dtypes import NARROW_FLOATS, narrow_bits, to_numpy

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()


@dataclass(frozen=True)
class MiniFloat:
    """A float of `mant` mantissa bits and exponent bias `bias` in a byte's low bits."""
    mant: int
    bias: int
    max_code: int          # largest finite magnitude's code
    nan_code: int | None   # a NaN's code without its sign (None: the type has no NaN)
    inf_code: int | None   # infinity's code (None: none)
    sign_bit: int
    unsigned_zero: bool    # the "fnuz" types: no negative zero, one NaN (the sign bit alone)


MINIFLOATS = {
    "float8e4m3fn": MiniFloat(3, 7, 0x7E, 0x7F, None, 0x80, False),
    "float8e4m3fnuz": MiniFloat(3, 8, 0x7F, 0x80, None, 0x80, True),
    "float8e5m2": MiniFloat(2, 15, 0x7B, 0x7E, 0x7C, 0x80, False),
    "float8e5m2fnuz": MiniFloat(2, 16, 0x7F, 0x80, None, 0x80, True),
    "float4e2m1": MiniFloat(1, 1, 0x7, None, None, 0x8, False),
}


def _c(t, v):
    return ir.Constant(t, v)


def _intrinsic(module, name, ret, args):
    f = module.globals.get(name)
    return f if f is not None else ir.Function(module, ir.FunctionType(ret, args), name=name)


def _table(module, dtype):
    """[256 x float]: the value of every byte as a `dtype` (bytes beyond a float4's 16 codes
    read their low nibble)."""
    name = f"__ember_decode_{dtype}"
    g = module.globals.get(name)
    if g is None:
        codes = np.arange(256, dtype=np.uint8)
        if dtype == "float4e2m1":
            codes = codes & 0x0F
        vals = codes.view(to_numpy(dtype)).astype(np.float32)
        arr_t = ir.ArrayType(F32, 256)
        g = ir.GlobalVariable(module, arr_t, name)
        g.global_constant = True
        g.linkage = "internal"
        g.initializer = ir.Constant(arr_t, [float(x) for x in vals])
    return g


def decode(b: ir.IRBuilder, module, raw, dtype):
    """The compute-type value (float32, or int8/uint8 for the sub-byte ints) of the bits `raw`."""
    if dtype == "bfloat16":
        return b.bitcast(b.shl(b.zext(raw, I32), _c(I32, 16)), F32)
    if dtype in NARROW_FLOATS:
        p = b.gep(_table(module, dtype), [_c(I32, 0), b.zext(raw, I64)], inbounds=True)
        return b.load(p)
    k = 8 - narrow_bits(dtype)
    if dtype.startswith("u"):
        return b.and_(raw, _c(I8, (1 << narrow_bits(dtype)) - 1))
    return b.ashr(b.shl(raw, _c(I8, k)), _c(I8, k))        # sign-extend the low bits


def encode(b: ir.IRBuilder, module, x, dtype, saturate: bool, src_float: bool):
    """The bits of `x` as a `dtype`: `x` is a float32 for the narrow floats; for the sub-byte
    ints a float32 (truncated toward zero, 0 where out of range, as ml_dtypes converts) or an
    integer of any width (wrapped)."""
    if dtype == "bfloat16":
        bits = b.bitcast(x, I32)
        odd = b.and_(b.lshr(bits, _c(I32, 16)), _c(I32, 1))
        rounded = b.lshr(b.add(b.add(bits, _c(I32, 0x7FFF)), odd), _c(I32, 16))
        quiet = b.or_(b.lshr(bits, _c(I32, 16)), _c(I32, 0x40))
        return b.trunc(b.select(b.fcmp_unordered("uno", x, x), quiet, rounded), I16)
    if dtype in MINIFLOATS:
        return _encode_minifloat(b, module, x, MINIFLOATS[dtype], saturate)
    nb = narrow_bits(dtype)
    mask = _c(I8, (1 << nb) - 1)
    if src_float:
        lo, hi = (0, (1 << nb) - 1) if dtype.startswith("u") else (-(1 << (nb - 1)), (1 << (nb - 1)) - 1)
        inside = b.and_(b.fcmp_ordered(">", x, _c(F32, lo - 1.0)), b.fcmp_ordered("<", x, _c(F32, hi + 1.0)))
        x = b.fptosi(b.select(inside, x, _c(F32, 0.0)), I8)
    elif x.type.width > 8:
        x = b.trunc(x, I8)
    elif x.type.width < 8:      # bool
        x = b.zext(x, I8)
    return b.and_(x, mask)


def _encode_minifloat(b, module, x, f: MiniFloat, saturate: bool):
    fabs = _intrinsic(module, "llvm.fabs.f32", F32, [F32])
    rint = _intrinsic(module, "llvm.roundeven.f32", F32, [F32])
    a = b.call(fabs, [x])
    u = b.bitcast(a, I32)
    # normal results: round the float32 mantissa to `mant` bits (nearest even; a carry moves
    # into the exponent), then rebias the exponent
    shift = 23 - f.mant
    odd = b.and_(b.lshr(u, _c(I32, shift)), _c(I32, 1))
    r = b.add(b.add(u, _c(I32, (1 << (shift - 1)) - 1)), odd)
    normal = b.sub(b.lshr(r, _c(I32, shift)), _c(I32, (127 - f.bias) << f.mant))
    # below the smallest normal: count in units of the smallest subnormal (rounding to the
    # smallest normal's code when it rounds up)
    q = b.call(rint, [b.fmul(a, _c(F32, 2.0 ** (f.bias + f.mant - 1)))])
    sub = b.fptosi(b.select(b.fcmp_ordered("<", a, _c(F32, 2.0 ** (1 - f.bias))), q, _c(F32, 0.0)), I32)
    code = b.select(b.fcmp_ordered("<", a, _c(F32, 2.0 ** (1 - f.bias))), sub, normal)
    over = b.icmp_signed(">", code, _c(I32, f.max_code))
    if saturate or (f.inf_code is None and f.nan_code is None):
        code = b.select(over, _c(I32, f.max_code), code)
    else:
        code = b.select(over, _c(I32, f.inf_code if f.inf_code is not None else f.nan_code), code)
    is_nan = b.fcmp_unordered("uno", x, x)
    negative = b.icmp_signed("<", b.bitcast(x, I32), _c(I32, 0))
    if f.unsigned_zero:
        # no negative zero: a negative value rounding to 0 is +0; NaN and (unsaturated)
        # overflow are the sign bit alone
        signed = b.select(b.and_(negative, b.icmp_signed("!=", code, _c(I32, 0))),
                          b.or_(code, _c(I32, f.sign_bit)), code)
        signed = b.select(b.icmp_signed("==", code, _c(I32, f.nan_code)), _c(I32, f.nan_code), signed)
        out = b.select(is_nan, _c(I32, f.nan_code), signed)
    else:
        signed = b.select(negative, b.or_(code, _c(I32, f.sign_bit)), code)
        if f.nan_code is not None:
            nan = b.select(negative, _c(I32, f.nan_code | f.sign_bit), _c(I32, f.nan_code))
        else:   # float4 has no NaN: ml_dtypes (ONNX's reference) makes one a zero of the opposite sign
            nan = b.select(negative, _c(I32, 0), _c(I32, f.sign_bit))
        out = b.select(is_nan, nan, signed)
    return b.trunc(out, I8)
