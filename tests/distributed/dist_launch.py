"""Launching a test file's worker processes for a gloo process group on the CPU.

The test file, run as ``python FILE --worker RANK WORLD OUTDIR [ARG ...]``, joins a
process group on 127.0.0.1 and writes what it saw into OUTDIR; the parent test compares
the ranks. Loopback only: gloo's own sockets are pinned to ``lo`` where it exists.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Sequence, Tuple


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    script: str, world: int, outdir: Path, timeout_s: float, args: Sequence[str] = ()
) -> Tuple[List[int], str]:
    """Runs ``world`` workers of ``script``; returns their exit codes (killed ones past
    ``timeout_s`` included) and the tail of each rank's log."""
    env = dict(
        os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1"
    )
    if os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    procs, logs = [], []
    for rank in range(world):
        log = open(outdir / f"rank{rank}.log", "w")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, script, "--worker", str(rank), str(world), str(outdir), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + timeout_s
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        for log in logs:
            log.close()
    report = "\n".join(
        f"--- rank {r} (exit {p.returncode}) ---\n" + (outdir / f"rank{r}.log").read_text()[-3000:]
        for r, p in enumerate(procs)
    )
    return [p.returncode for p in procs], report


def run_ranks(
    script: str,
    world: int,
    outdir: Path,
    timeout_s: float,
    result: str = "rank{rank}.pt",
    args: Sequence[str] = (),
) -> list:
    """:func:`launch`, then each rank's saved results (``outdir / result``, formatted with
    ``rank``); fails the calling test, with every rank's log tail, if a worker failed or
    ran past ``timeout_s``."""
    import pytest
    import torch

    codes, report = launch(script, world, outdir, timeout_s, args)
    if any(c != 0 for c in codes):
        pytest.fail(f"{world} distributed workers failed or timed out ({timeout_s}s):\n{report}")
    return [torch.load(outdir / result.format(rank=r), weights_only=False) for r in range(world)]


def skip_without_fully_shard() -> None:
    """Skips the calling test module where torch has no public FSDP2 ``fully_shard``."""
    import pytest
    import torch

    fsdp = pytest.importorskip("torch.distributed.fsdp")
    if not hasattr(fsdp, "fully_shard"):
        pytest.skip(f"torch {torch.__version__} has no public fully_shard", allow_module_level=True)


def init_worker(rank: int, world: int) -> None:
    """Joins the group the parent launched (one intra-op thread per rank)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )


def worker_main(worker: Callable[..., None]) -> None:
    """The worker side of :func:`launch` (``python FILE --worker RANK WORLD OUTDIR [ARG
    ...]``): joins the group, runs ``worker(rank, world, outdir, *args)`` (which saves what
    it saw in ``outdir``), and leaves.

    Leaving: every rank destroys the groups together, with FSDP2's and DeviceMesh's
    reference cycles collected first, then the process ends at once (``os._exit``), its
    output flushed. torch keeps references to a process group beyond
    ``destroy_process_group`` (its caches), so the group is otherwise torn down in the
    interpreter's finalization, where gloo's threads can abort the process once its
    results are saved (SIGABRT, "terminate called without an active exception": seen
    under torch 2.11 on the two-core CI). An exception in ``worker`` still ends the
    process with an error and its traceback.
    """
    import torch.distributed as dist

    rank, world, outdir, args = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
    init_worker(rank, world)
    worker(rank, world, outdir, *args)
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
