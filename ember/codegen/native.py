"""Native compilation: LLVM IR text -> optimised object code for the host CPU, with an
on-disk object cache keyed by a hash of (IR, target triple, CPU name and features, llvmlite
version, Ember version), and loading of the object into an execution engine."""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import sys
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from ..errors import CacheWarning, CompileError

_lock = threading.Lock()
_engines = []          # keep engines alive for the process lifetime of their functions


# EMBER_TARGET caps the instruction set that code is generated for below what the host has:
# "avx2" (no AVX-512) or "sse4.2" (no AVX). It builds and tests the narrower variants on a
# wider machine, the way they would run on a CPU without those extensions. The features
# each level drops, by name prefix (their dependants go with them: AVX-512 needs AVX2 ...):
_TARGET_DROPS = {
    "host": (),
    "avx2": ("avx512", "avx10", "evex512", "amx"),
    "sse4.2": ("avx", "amx", "evex512", "fma", "f16c", "vaes", "vpclmulqdq", "xop", "gfni"),
}


def _target_level() -> str:
    level = os.environ.get("EMBER_TARGET", "host").strip().lower() or "host"
    if level not in _TARGET_DROPS:
        raise CompileError(f"EMBER_TARGET={level!r} is not a target level; use one of "
                           f"{', '.join(_TARGET_DROPS)} (each caps the host's instruction set)")
    return level


@lru_cache(maxsize=None)
def target_info():
    """(triple, cpu, features) that code is generated for: the host's, less what
    EMBER_TARGET drops."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    feats = dict(llvm.get_host_cpu_features())
    drops = _TARGET_DROPS[_target_level()]
    if drops:
        # (explicit "-feature"s override what the CPU name implies; its tuning stays)
        feats.update({f: False for f in feats if f.startswith(drops)})
        if not triple.startswith(("x86_64", "i386", "i686")):
            raise CompileError(f"EMBER_TARGET={_target_level()} applies to x86 hosts only (this one is {triple})")
    features = ",".join(("+" if on else "-") + f for f, on in sorted(feats.items()))
    return triple, cpu, features


def has_feature(name: str) -> bool:
    """Whether the host CPU has the LLVM target feature `name` (e.g. "bmi2")."""
    return f"+{name}" in target_info()[2].split(",")


@lru_cache(maxsize=None)
def _data_cache_bytes(level: int, default: int) -> int:
    """The host's per-core data cache at `level` (Linux sysfs), `default` where it cannot be read."""
    try:
        for idx in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            if (idx / "level").read_text().strip() == str(level) and (idx / "type").read_text().strip() != "Instruction":
                size = (idx / "size").read_text().strip().upper()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
                return int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return default


def l1_bytes() -> int:
    """The per-core L1 data cache, 32 KiB where it cannot be read."""
    return _data_cache_bytes(1, 32 << 10)


def l2_bytes() -> int:
    """The per-core L2 cache, 1 MiB where it cannot be read."""
    return _data_cache_bytes(2, 1 << 20)


def vector_bits() -> int:
    return host_target().vector_bits


def _l3_bytes() -> int:
    return _data_cache_bytes(3, 0)


@lru_cache(maxsize=None)
def host_target():
    """The `ember.ir.target.Target` code is generated for: the host's (less what EMBER_TARGET
    drops), without measured figures (`runtime.probe.measured_target` adds them)."""
    from ..ir.target import Target
    triple, cpu, f = target_info()
    feats = set(f.split(","))
    if "+avx512f" in feats:
        isa, bits, regs, masked = "avx512", 512, 32, True
    elif "+avx2" in feats or "+avx" in feats:
        isa, bits, regs, masked = "avx2", 256, 16, False
    elif triple.startswith(("aarch64", "arm64")):
        isa, bits, regs, masked = "neon", 128, 32, False
    elif triple.startswith(("x86_64", "i386", "i686")):
        isa, bits, regs, masked = "sse4.2", 128, 16, False
    else:
        isa, bits, regs, masked = "generic", 128, 16, False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return Target(isa=isa, vector_bits=bits, vector_registers=regs, masked_vectors=masked,
                  l1_bytes=l1_bytes(), l2_bytes=l2_bytes(), l3_bytes=_l3_bytes(), cores=cores,
                  triple=triple, cpu=cpu, features=f)


@lru_cache(maxsize=None)
def target_machine():
    triple, cpu, features = target_info()
    target = llvm.Target.from_triple(triple)
    # The large code model: MCJIT places each section where mmap finds room, and in a process
    # holding big libraries (torch, jaxlib) code and its constants can land more than 2 GiB
    # apart, past a 32-bit PC-relative reach (an LLVM assertion that aborts the process).
    return target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="pic", codemodel="large")


def cache_dir() -> Path:
    d = os.environ.get("EMBER_CACHE_DIR")
    p = Path(d) if d else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ember"
    p.mkdir(parents=True, exist_ok=True)
    return p


DEFAULT_CACHE_LIMIT = 4 << 30
_CACHE_SUFFIXES = (".o", ".json", ".npy", ".ref")   # Ember's artifacts; anything else is left alone
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def cache_limit() -> int:
    """The disk cache's size cap in bytes: `EMBER_CACHE_MAX_BYTES` ("4G", "500M", "0" to
    keep everything), else 4 GiB. Every source edit changes `compiler_fingerprint`, so an
    uncapped cache grows by a model's weights per edit."""
    env = os.environ.get("EMBER_CACHE_MAX_BYTES", "").strip().upper().removesuffix("B").removesuffix("I")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)", env)
    if not env or m is None:
        if env:
            warnings.warn(f"EMBER_CACHE_MAX_BYTES={os.environ['EMBER_CACHE_MAX_BYTES']!r} is not a size "
                          f"such as 4G or 500M; using {DEFAULT_CACHE_LIMIT >> 30}G", stacklevel=2)
        return DEFAULT_CACHE_LIMIT
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def write_atomic(path: Path, data: bytes) -> None:
    """Write a cache file so no reader, in this process or another, sees half of it: a
    private temporary file in the same folder, then a rename over the name."""
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def reject_cached(path, why: str) -> None:
    warnings.warn(f"Ember's disk cache entry {path} is {why}; ignoring it and compiling anew",
                  CacheWarning, stacklevel=3)


# an object file is stored with the SHA-256 of its bytes after them, and loaded only when
# they match: a truncated or overwritten object would be executed as machine code
_DIGEST = 32


def read_object(path: Path) -> bytes | None:
    """The object file cached at `path` if it is intact (None, with a warning, if not)."""
    try:
        data = path.read_bytes()
    except OSError:         # absent, or evicted by another process meanwhile
        return None
    obj, digest = data[:-_DIGEST], data[-_DIGEST:]
    if len(data) <= _DIGEST or hashlib.sha256(obj).digest() != digest:
        reject_cached(path, "truncated or corrupt (its content hash does not match)")
        return None
    return obj


def touch_cached(*paths) -> None:
    """Mark cache files as just used, so `trim_cache` evicts least recently used first."""
    for p in paths:
        try:
            os.utime(p)
        except OSError:
            pass


def trim_cache(limit: int | None = None) -> int:
    """Delete the least recently used artifacts until the cache holds at most `limit` bytes;
    returns the bytes freed. A reader that finds a piece gone recompiles, and a weights
    file another process has mapped stays readable until it is unmapped."""
    limit = cache_limit() if limit is None else limit
    if limit <= 0:
        return 0
    files = []
    for e in os.scandir(cache_dir()):
        # ".tmp" files are another process's writes in flight
        if e.is_file(follow_symlinks=False) and e.name.endswith(_CACHE_SUFFIXES) and ".tmp" not in e.name:
            try:
                st = e.stat()
            except OSError:
                continue
            files.append((st.st_mtime_ns, st.st_size, e.path))
    total = sum(f[1] for f in files)
    freed = 0
    for _, size, path in sorted(files):
        if total - freed <= limit:
            break
        try:
            os.unlink(path)
            freed += size
        except OSError:
            pass
    return freed


@lru_cache(maxsize=None)
def compiler_fingerprint() -> str:
    """Ember's version plus a digest of its own source files (size, mtime): a code change
    invalidates cached artifacts even when the version number did not move."""
    from .. import __version__
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(__version__.encode())
    for p in sorted(root.rglob("*.py")):
        st = p.stat()
        h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def object_key(ir_text: str) -> str:
    triple, cpu, features = target_info()
    h = hashlib.sha256()
    for part in (ir_text, triple, cpu, features, llvmlite.__version__, compiler_fingerprint()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def compile_ir(ir_text: str, debug: bool = False) -> bytes:
    """Optimise and compile LLVM IR text to an object file (bytes)."""
    tm = target_machine()
    try:
        mod = llvm.parse_assembly(ir_text)
        mod.verify()
    except RuntimeError as e:
        raise CompileError(f"generated LLVM IR is invalid (an Ember bug): {e}") from None
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    pm.run(mod, pb)
    if debug:
        print(str(mod), file=sys.stderr)
    return tm.emit_object(mod)


def get_object(ir_text: str, use_cache: bool = True) -> tuple[bytes, str]:
    key = object_key(ir_text)
    path = cache_dir() / f"{key}.o"
    if use_cache and path.exists():
        obj = read_object(path)
        if obj is not None:
            touch_cached(path)
            return obj, key
    obj = compile_ir(ir_text, debug="llvm-opt" in os.environ.get("EMBER_DEBUG", ""))
    if use_cache:
        write_atomic(path, obj + hashlib.sha256(obj).digest())
    return obj, key


RUN_PROTO = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)
PROFILED_PROTO = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p)


def load_object(obj: bytes, symbol: str = "ember_run", proto=RUN_PROTO, optional: dict | None = None):
    """Load an object file; returns a ctypes function
    `void f(void** bases, int64* sizes, int32 nthreads)`. Objects that call the thread pool
    need it loaded first (`ember.codegen.threadpool.ensure_pool`), so the symbol resolves.
    `optional` maps further symbol names to prototypes; those found are returned as well
    (then the result is a dict name -> function)."""
    with _lock:
        tm = target_machine()
        empty = llvm.parse_assembly("")
        ee = llvm.create_mcjit_compiler(empty, tm)
        ee.add_object_file(llvm.ObjectFileRef.from_data(obj))
        ee.finalize_object()
        addr = ee.get_function_address(symbol)
        if not addr:
            raise CompileError(f"symbol {symbol} missing from compiled object")
        extra = {n: ee.get_function_address(n) for n in (optional or {})}
        _engines.append(ee)
    if optional is None:
        return proto(addr)
    found = {symbol: proto(addr)}
    found.update({n: optional[n](a) for n, a in extra.items() if a})
    return found
