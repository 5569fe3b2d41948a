"""The machine code is generated for, as data: instruction set, vector width, registers,
caches, cores, and the measured FMA peak and memory bandwidth.

Every strategy threshold that depends on the machine is a property here, derived from these
figures, so that scheduling, code generation and the op decompositions ask one object and
choose the same way (a threshold written as "16" was one AVX-512 vector of float32 and wrong
for AVX2 and Arm). `codegen.native.host_target` describes the host; `runtime.probe` adds the
measured figures. Tests build targets by hand (`Target.preset`) to check plans for machines
they do not run on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Target:
    isa: str                      # "avx512", "avx2", "sse4.2", "neon", "generic"
    vector_bits: int              # one SIMD register
    vector_registers: int         # architectural SIMD registers (zmm0-31, ymm0-15, v0-31)
    masked_vectors: bool          # mask registers: a masked load/store costs no vector register
    l1_bytes: int                 # per-core data caches
    l2_bytes: int
    l3_bytes: int                 # the whole shared last level (0: unknown)
    cores: int                    # CPUs this process may run on
    fma_gflops: float | None = None   # measured float32 FMA peak of one core (None: not measured)
    read_gbs: float | None = None     # measured read bandwidth of one core from DRAM
    prefetch_reach_bytes: int = 2048  # streams this far apart (half a page) defeat the hardware prefetchers
    triple: str = ""
    cpu: str = ""
    features: str = field(default="", repr=False)

    # ---- derived: every machine-dependent threshold in Ember comes from one of these ----
    def lanes(self, dtype_bits: int = 32) -> int:
        """Elements of `dtype_bits` in one vector (at least 4: narrower code is scalarised)."""
        return max(self.vector_bits // max(dtype_bits, 8), 4)

    @property
    def f32_lanes(self) -> int:
        return self.lanes(32)

    def row_is_short(self, n: int) -> bool:
        """A row of `n` float32 fits one vector: window ops on such rows run over flattened
        pixels (a 7x7 image fills 49 of 64 lanes instead of 7 of 16 per row)."""
        return n <= self.f32_lanes

    def row_is_narrow(self, n: int) -> bool:
        """A row of `n` float32 fills at most half a vector (depthwise windows over flattened
        pixels below this; the row kernels above it)."""
        return n <= self.f32_lanes // 2

    def whole_vectors(self, n: int) -> bool:
        """`n` float32 are whole vectors: no masked tail (the strided-window GEMM reads)."""
        return n % self.f32_lanes == 0

    @property
    def line_floats(self) -> int:
        """float32 per cache line: a row of outputs ending inside a line shares it between the
        threads writing the rows on either side."""
        return self.line_bytes // 4

    @property
    def accumulator_registers(self) -> int:
        """Registers a register-blocked kernel may keep accumulators in: three quarters of the
        file, the rest for the operands it loads and broadcasts (24 of AVX-512's 32, 12 of
        AVX2's 16)."""
        return self.vector_registers * 3 // 4

    def gemm_mr(self, nr: int) -> int:
        """Rows of a GEMM tile with `nr` vectors of columns: as many as the accumulator
        registers hold (AVX-512 12 x 2, AVX2 6 x 2)."""
        return max(self.accumulator_registers // nr, 1)

    @property
    def line_bytes(self) -> int:
        return 64

    @property
    def balance(self) -> float | None:
        """FLOPs per byte of DRAM traffic at which one core is as busy computing as reading:
        below it a kernel is memory-bound (Zen 5 ~ 280/40, Zen 4 ~ 115/40)."""
        if not self.fma_gflops or not self.read_gbs:
            return None
        return self.fma_gflops / self.read_gbs

    @property
    def dense_prefetch_pays(self) -> bool:
        """A Linear layer's GEMM (packed weights as B) prefetches its epilogue's lines of C
        from the k loop and takes K in slices (so that only the last slice prefetches) where
        the core computes fast against its memory: on Sapphire Rapids (balance 8.5) that made
        64x4096x4096 148 -> 191 GFLOP/s; on a Zen 3 (balance 5.1) the same prefetches and
        slices cost 10-25% (128x768x3072 65 -> 77 GFLOP/s without them), its prefetchers
        keeping up. The threshold sits between the two chips measured, on the rounding of
        `plan_key` (balance 2^2.5 = 5.7), so one key never names two plans; unmeasured: on."""
        return self._balance_step is None or self._balance_step >= 3

    @property
    def _balance_step(self) -> int | None:
        """The balance rounded to a power of two: what plans and their cache keys see of it."""
        return None if self.balance is None else round(math.log2(self.balance))

    def plan_key(self) -> str:
        """What plans are derived from, for cache keys. The measured figures enter only as the
        balance rounded to a power of two, so a noisy re-measurement does not change keys."""
        bal = "?" if self._balance_step is None else str(self._balance_step)
        return (f"{self.isa}/{self.vector_bits}/{self.vector_registers}/{int(self.masked_vectors)}/"
                f"{self.l1_bytes}/{self.l2_bytes}/{self.l3_bytes}/{self.cores}/b{bal}")

    def with_measured(self, fma_gflops: float | None, read_gbs: float | None) -> "Target":
        return replace(self, fma_gflops=fma_gflops, read_gbs=read_gbs)

    @staticmethod
    def preset(name: str, **overrides) -> "Target":
        """A described machine, for tests and for reasoning about chips not at hand."""
        base = dict(_PRESETS[name])
        base.update(overrides)
        return Target(**base)


_KB, _MB = 1 << 10, 1 << 20
_PRESETS = {
    # 2 x 512-bit FMA pipes per core
    "zen5": dict(isa="avx512", vector_bits=512, vector_registers=32, masked_vectors=True, l1_bytes=48 * _KB,
                 l2_bytes=1 * _MB, l3_bytes=32 * _MB, cores=2, fma_gflops=280.0, read_gbs=40.0, cpu="znver5"),
    # AVX-512 double-pumped through 256-bit pipes: the same code, half the peak
    "zen4": dict(isa="avx512", vector_bits=512, vector_registers=32, masked_vectors=True, l1_bytes=32 * _KB,
                 l2_bytes=1 * _MB, l3_bytes=32 * _MB, cores=2, fma_gflops=115.0, read_gbs=40.0, cpu="znver4"),
    "sapphirerapids": dict(isa="avx512", vector_bits=512, vector_registers=32, masked_vectors=True,
                           l1_bytes=48 * _KB, l2_bytes=2 * _MB, l3_bytes=105 * _MB, cores=2, fma_gflops=220.0,
                           read_gbs=16.0, cpu="sapphirerapids"),
    "avx2": dict(isa="avx2", vector_bits=256, vector_registers=16, masked_vectors=False, l1_bytes=32 * _KB,
                 l2_bytes=512 * _KB, l3_bytes=16 * _MB, cores=2, fma_gflops=100.0, read_gbs=20.0, cpu="haswell"),
    "sse4.2": dict(isa="sse4.2", vector_bits=128, vector_registers=16, masked_vectors=False, l1_bytes=32 * _KB,
                   l2_bytes=256 * _KB, l3_bytes=8 * _MB, cores=2, fma_gflops=25.0, read_gbs=10.0, cpu="nehalem"),
    "neon": dict(isa="neon", vector_bits=128, vector_registers=32, masked_vectors=False, l1_bytes=64 * _KB,
                 l2_bytes=1 * _MB, l3_bytes=32 * _MB, cores=2, fma_gflops=60.0, read_gbs=30.0, cpu="neoverse-v1"),
}

# What graph-level decisions assume when no target is given (golden pass tests, tools that
# only inspect a graph): an AVX-512 machine without measured figures.
DEFAULT = Target.preset("zen5", fma_gflops=None, read_gbs=None, cpu="")
