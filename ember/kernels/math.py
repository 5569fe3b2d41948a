"""Vectorisable float32 math in the kernel language: exp, erf, tanh.

LLVM's `llvm.exp`/libm `erff`/`tanhf` become one scalar library call per lane; these are
branch-free polynomial versions (selects instead of branches), so inside a vector loop every
lane is computed at once. Accuracy: about 1.5 ulp over the float32 range for exp and erf, 5 ulp
near +-1 for tanh (tests/test_library checks them against float64 references). Coefficients are least-squares fits made for Ember
(relative-error weighted, on Chebyshev-spaced points), evaluated with Horner's rule and FMAs.
"""
from __future__ import annotations

import math

from ..lang import bitcast, exp, float32, fma, floor, int32, kernel, unroll

LOG2E = 1.4426950408889634
LN2_HI = 0.693359375            # ln 2 = LN2_HI + LN2_LO; LN2_HI has few bits so n*LN2_HI is exact
LN2_LO = -2.12194440e-4

# erf(x)/x = P(x^2) on [0, 1]
ERF_SMALL = (1.1283791665102851, -0.3761262884288973, 0.11283612415400504, -0.026854807772339617,
             0.00519005176297728, -0.0008024335308542824, 7.898139128499626e-05)
# erfc(x) * exp(x^2) = R(x) on [1, 4]
ERFC_SCALED = (0.9922681832051955, -1.0821413886532725, 0.8737438739412012, -0.5418180539749647,
               0.25757126638899686, -0.09242002833435571, 0.024437182246064428, -0.004594438010783641,
               0.0005791937569360472, -4.378806071453356e-05, 1.4981502127753288e-06)
# tanh(x)/x = P(x^2) / Q(x^2) on [0, 9] (a rational fit, Lawson-weighted least squares on the
# linearised problem): 9 FMAs and one division, against an exp, a division and a polynomial
# for the exp form. Fit error 2e-8 relative; evaluated in float32 about 3e-7 near +-1 (5 ulp)
TANH_P = (0.9999999795825066, 0.13380983986896175, 0.003495538068398823, 2.0608247220665468e-05,
          1.3353504802265852e-08)
TANH_Q = (1.0, 0.4671429962812489, 0.025876793134397724, 0.0003285552309501668, 7.77608372194086e-07)


def poly(coeffs, x):
    """coeffs[0] + coeffs[1] x + ... by Horner's rule (coeffs is a compile-time tuple)."""
    p = coeffs[len(coeffs) - 1]
    for k in unroll(len(coeffs) - 2, -1, -1):
        p = fma(p, x, coeffs[k])
    return p


EXP_TAYLOR = (1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720)


@kernel
def exp_f32(x: float32) -> float32:
    # exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln(2) / 2
    xc = min(max(x, -87.0), 88.72283)
    n = floor(fma(xc, LOG2E, 0.5))
    r = fma(n, -LN2_HI, xc)
    r = fma(n, -LN2_LO, r)
    p = poly(EXP_TAYLOR, r)
    # 2^n as two factors, so n = 128 (the top of the range) overflows only when it should
    half_scale = bitcast((int32(n) + 126) << 23, float32)
    y = p * half_scale * 2.0
    y = 0.0 if x < -87.0 else y
    return math.inf if x > 88.72283 else y


@kernel
def erf_f32(x: float32) -> float32:
    a = abs(x)
    x2 = a * a
    small = a * poly(ERF_SMALL, x2)
    large = 1.0 - exp(-x2) * poly(ERFC_SCALED, a)
    v = small if a < 1.0 else large
    v = 1.0 if a >= 4.0 else v
    return -v if x < 0.0 else v


@kernel
def tanh_f32(x: float32) -> float32:
    a = abs(x)
    c = min(a, 9.0)
    t = c * c
    v = c * poly(TANH_P, t) / poly(TANH_Q, t)
    v = 1.0 if a > 9.01 else v          # where tanh rounds to 1 in float32
    return -v if x < 0.0 else v