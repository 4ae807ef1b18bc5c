"""AOT-compile every shipped Triton kernel configuration for real GPUs, without a GPU.

    python tools/aot_compile_triton.py [--arch 80 90] [--jobs N] [--only SUBSTRING]

Compiles each (kernel, dtype kind, block/chunk, num_warps) configuration that
laperm_kernels.ops.backends.triton.backend can launch, for sm_80 (A100) and sm_90 (H100), in a fresh
Triton cache (so the times are real compile times), and prints per configuration the
compile time, registers per thread, shared memory and spill (local memory) bytes, read
from the cubin with the cuobjdump that ships with Triton. Exits non-zero if any
configuration fails to compile, spills, or needs global scratch at launch (the launcher
would allocate it mid-call; the backend makes all of a call's allocations up front).

Each configuration is compiled through a launch's own path, ``kernel.warmup(...)`` (bind
the arguments, specialise, ``triton.compile``; launch nothing), with Triton's driver
replaced by one that only names the target GPU (``GPUTarget("cuda", arch, 32)``). So the
compile is keyed in Triton's cache exactly as a launch on such a GPU keys it (signature,
constants, attributes and options, whose form differs between Triton versions), and with
TRITON_CACHE_DIR set the cache is kept: tools/gpu_build_and_check.sh fills it this way,
in parallel, before the checks launch the kernels.

Why: tl.sort unrolls a bitonic network, and ptxas time grows badly when a big tile has
too few warps (BLOCK=1024 with 4 warps ran > 9 minutes); this proves each shipped
configuration compiles in seconds. Needs only `pip install -c constraints.txt triton` (no
CUDA, no GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

# Before triton is imported: real @jit functions (not the interpreter's), a fresh cache
# unless TRITON_CACHE_DIR names one (which is then kept).
os.environ.pop("TRITON_INTERPRET", None)
_OWN_CACHE = "TRITON_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="laperm-aot-cache-")

ROW_TABLE = {"w_addr": "*i64", "s_addr": "*i64", "lengths": "*i32"}
# Long rows: each row's scratch offset, then one (row, chunk) pair per program.
TILE_TABLE = {"key_offsets": "*i64", "tile_row": "*i32", "tile_start": "*i32"}


def configurations():
    """(name, kernel name, signature, constexprs, num_warps) of every shipped config."""
    from laperm_kernels.ops.backends.triton import kernels as tk

    kinds = {"f32": tk.KIND_FLOAT32, "f16": tk.KIND_FLOAT16, "bf16": tk.KIND_BFLOAT16}
    out = []
    for kind_name, kind in kinds.items():
        for block, (rows, warps) in sorted(tk.BLOCK_CONFIGS.items()):
            out.append(
                (
                    f"block {kind_name} BLOCK={block} ROWS={rows}",
                    "rank_match_block_kernel",
                    {
                        **ROW_TABLE,
                        "num_rows": "i32",
                        "KIND": "constexpr",
                        "BLOCK": "constexpr",
                        "ROWS": "constexpr",
                    },
                    {"KIND": kind, "BLOCK": block, "ROWS": rows},
                    warps,
                )
            )
        out.append(
            (
                f"sort_chunks {kind_name} CHUNK={tk.CHUNK}",
                "sort_chunks_kernel",
                {
                    "w_addr": "*i64",
                    "lengths": "*i32",
                    **TILE_TABLE,
                    "scratch": "*i64",
                    "KIND": "constexpr",
                    "CHUNK": "constexpr",
                },
                {"KIND": kind, "CHUNK": tk.CHUNK},
                tk.SORT_WARPS,
            )
        )
        out.append(
            (
                f"merge_runs {kind_name} CHUNK={tk.CHUNK}",
                "merge_runs_kernel",
                {
                    **ROW_TABLE,
                    **TILE_TABLE,
                    "src": "*i64",
                    "dst": "*i64",
                    "run": "i32",
                    "KIND": "constexpr",
                    "CHUNK": "constexpr",
                    "LOG2_CHUNK": "constexpr",
                },
                {"KIND": kind, "CHUNK": tk.CHUNK, "LOG2_CHUNK": tk.CHUNK.bit_length() - 1},
                tk.MERGE_WARPS,
            )
        )
    return out


def _resource_usage(cubin: bytes) -> dict:
    """REG / SHARED / LOCAL (spill) figures of the one kernel in ``cubin``, and SASS, its
    static instruction count (the sort network is fully unrolled, so per thread this is
    about the instructions it executes: the compute side of docs/triton.md's model)."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run(
            [tool, "-sass", f.name], capture_output=True, text=True, check=True
        ).stdout
    usage = {k: int(v) for k, v in re.findall(r"(REG|SHARED|LOCAL|STACK):(\d+)", text)}
    usage["SASS"] = len(re.findall(r"^\s*/\*[0-9a-f]{4,}\*/\s+\S", sass, re.M))
    return usage


class TargetOnlyDriver:
    """Triton's driver as far as a launch's compile path uses it: the target GPU, device 0,
    stream 0. ``warmup`` compiles and launches nothing, so no device is needed."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


@contextlib.contextmanager
def target_only(arch: int, kernels=()):
    """Triton's active driver is a TargetOnlyDriver inside; after, the one before it (set
    back as it was: reset_active() would create the default driver, which needs a GPU),
    and ``kernels`` forget the binders and binaries they made for the target."""
    from triton.runtime.driver import driver

    previous = driver._active
    driver.set_active(TargetOnlyDriver(arch))
    try:
        yield
    finally:
        driver._active = previous
        for k in kernels:
            k.device_caches.clear()


def launch_arguments(fn, signature: dict) -> list:
    """Arguments as the backend passes them: fresh (16-byte aligned) int64/int32 tensors for
    the pointers, and for the integers any value, since every kernel marks its integers
    do_not_specialize (one that does not would compile once per value class: 1, multiples
    of 16, the rest; the checks could launch any of them)."""
    unspecialised = {p.name for p in fn.params if p.do_not_specialize}
    args = []
    for name, kind in signature.items():
        if kind == "constexpr":
            continue
        if kind.startswith("*"):
            args.append(torch_zeros(kind[1:]))
        elif name in unspecialised:
            args.append(7)
        else:
            raise ValueError(
                f"{fn.__name__}: {name} ({kind}) is specialised by value at "
                "launch; mark it do_not_specialize or compile each value class"
            )
    return args


def torch_zeros(kind: str):
    import torch

    return torch.zeros(4, dtype={"i64": torch.int64, "i32": torch.int32}[kind])


def compile_one(job):
    name, kernel_name, signature, constexprs, warps, arch = job
    from laperm_kernels.ops.backends.triton import kernels as tk

    fn = getattr(tk, kernel_name)
    start = time.perf_counter()
    try:
        with target_only(arch, [fn]):
            kernel = fn.warmup(
                *launch_arguments(fn, signature), grid=(1,), num_warps=warps, **constexprs
            )
        usage = _resource_usage(kernel.asm["cubin"])
        usage["shared_meta"] = kernel.metadata.shared
        # Global scratch would be allocated by the launcher at every launch, after earlier
        # launches of the same call wrote weights: the backend's all-or-nothing rule
        # (all memory up front) needs none.
        usage["global_scratch"] = sum(
            getattr(kernel.metadata, f, 0) or 0
            for f in ("global_scratch_size", "profile_scratch_size")
        )
        err = None
    except Exception as e:  # reported, and the exit status says so
        usage, err = {}, f"{type(e).__name__}: {e}"
    return name, arch, warps, time.perf_counter() - start, usage, err


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="", help="compile configurations whose name has this")
    args = parser.parse_args(argv)

    jobs = [(*cfg, arch) for cfg in configurations() if args.only in cfg[0] for arch in args.arch]
    print(
        f"AOT-compiling {len(jobs)} configurations with {args.jobs} jobs "
        f"(cache {os.environ['TRITON_CACHE_DIR']})",
        flush=True,
    )
    print(
        f"{'configuration':42s} {'sm':>3s} {'warps':>5s} {'time s':>7s} {'regs':>5s} "
        f"{'smem B':>7s} {'spill B':>7s} {'SASS':>6s} {'SASS/key':>8s}",
        flush=True,
    )
    start = time.perf_counter()
    failed = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for (name, arch, warps, secs, usage, err), job in zip(pool.map(compile_one, jobs), jobs):
            if err is None and usage.get("LOCAL", 0):
                err = f"spills {usage['LOCAL']} bytes to local memory"
            if err is None and usage.get("global_scratch", 0):
                err = f"needs {usage['global_scratch']} bytes of launch-time global scratch"
            failed += err is not None
            keys = job[3].get("BLOCK", 0) * job[3].get("ROWS", 1) or job[3]["CHUNK"]
            per_key = usage.get("SASS", 0) * warps * 32 / keys
            print(
                f"{name:42s} {arch:3d} {warps:5d} {secs:7.1f} {usage.get('REG', -1):5d} "
                f"{usage.get('shared_meta', -1):7d} {usage.get('LOCAL', -1):7d} "
                f"{usage.get('SASS', -1):6d} {per_key:8.0f}" + (f"  FAILED: {err}" if err else ""),
                flush=True,
            )
    total = time.perf_counter() - start
    print(f"{len(jobs) - failed}/{len(jobs)} compiled in {total:.1f} s wall")
    if _OWN_CACHE:
        shutil.rmtree(os.environ["TRITON_CACHE_DIR"], ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
