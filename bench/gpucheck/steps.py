"""The checks of what a training run does: cuda-graph (a captured sync), laperm-steps
(LaPerm around a real optimizer) and dispatch (auto's verdicts)."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

import laperm_kernels as lk
from laperm_kernels.ops.backends import cuda as cuda_backend
from laperm_kernels.ops.reference import (
    bitwise_equal,
    rank_match_reference_,
)

from ..presets import PRESETS
from ..results import make_model
from . import context
from .context import Context

# warp, block 1024, block 6144, large (segmented sort), large (device-wide sort)
GRAPH_SHAPES = [(1000, 40), (256, 576), (64, 4608), (8, 20000), (1 << 18,)]


def check_cuda_graph(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = context.need_cuda_backend()
    ws, ss = make_model(GRAPH_SHAPES, torch.float32, device, seed=1)
    pristine = [w.clone() for w in ws]
    want = [rank_match_reference_(w.cpu(), s.cpu()) for w, s in zip(ws, ss)]
    plan = cuda_backend.plan_for(ws, ss)
    described = cuda_backend.describe_plan(plan)
    details.update(
        shapes=[list(s) for s in GRAPH_SHAPES],
        launches=[name for name, _, _ in described["launches"]],
        large_batches=len(described["large_batches"]),
    )

    def sync():
        torch.ops.laperm.rank_match_planned_(ws, ss, *plan)

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm up off the capture stream, as torch advises
        sync()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sync()
    for w, p in zip(ws, pristine):
        w.copy_(p)
    graph.replay()
    torch.cuda.synchronize(device)
    differ = [i for i, (w, e) in enumerate(zip(ws, want)) if not bitwise_equal(w.cpu(), e)]
    details["differing_tensors"] = differ
    # Timed on weights already rank-matched: the same launches, the same work.
    details["eager_us"] = context.cuda_seconds(sync, 20) * 1e6
    details["replay_us"] = context.cuda_seconds(graph.replay, 20) * 1e6
    timing = f"replay {details['replay_us']:.1f} us vs eager {details['eager_us']:.1f} us a sync"
    if differ:
        return False, f"replay differs from the reference in tensors {differ}; {timing}"
    return True, f"replay bit-identical to the reference; {timing}"


def check_laperm_steps(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    device = context.need_gpu()

    def train(backend: str) -> List[torch.Tensor]:
        torch.manual_seed(0)
        # Linear layers only: cuDNN's convolution backward may be nondeterministic
        net = torch.nn.Sequential(
            torch.nn.Linear(64, 300),
            torch.nn.ReLU(),
            torch.nn.Linear(300, 100),
            torch.nn.ReLU(),
            torch.nn.Linear(100, 10),
        ).to(device)
        opt = lk.LaPerm(torch.optim.Adam(net.parameters(), lr=1e-2), sync_period=3, backend=backend)
        x = torch.randn(32, 64, device=device)
        y = torch.randint(0, 10, (32,), device=device)
        for _ in range(7):  # syncs after steps 3 and 6
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return [p.detach().cpu() for p in net.parameters()]

    auto, ref = train("auto"), train("torch")
    differ = [i for i, (a, r) in enumerate(zip(auto, ref)) if not bitwise_equal(a, r)]
    details.update(
        steps=7, sync_period=3, available=lk.available_backends(device), differing_parameters=differ
    )
    if differ:
        return False, f"'auto' and 'torch' differ in parameters {differ} after 7 steps"
    return True, "'auto' and 'torch' bit-identical after 7 Adam steps (2 syncs)"


def check_dispatch(ctx: Context, details: Dict[str, Any]) -> Tuple[bool, str]:
    decisions = lk.dispatch_report()
    details["decisions"] = decisions
    bad = [
        f"{c['backend']} on {signature_text(d['signature'])}: {c['verdict']} {c['detail']}"
        for d in decisions
        for c in d["candidates"]
        if c["verdict"] in ("mismatch", "error")
    ]
    details["bad_candidates"] = bad
    if bad:
        return False, "; ".join(bad)
    if not decisions:
        return True, "no backend='auto' decision in this process"
    return True, f"{len(decisions)} decisions: " + ", ".join(
        f"{signature_text(d['signature'])} -> {d['backend']}" for d in decisions
    )


def signature_text(sig: Dict[str, Any]) -> str:
    shapes = [tuple(s) for s in sig.get("shapes", [])]
    model = next((p for p, s in PRESETS.items() if s == shapes), f"{len(shapes)} tensors")
    return f"{model} {sig.get('dtype', '?')} on {sig.get('device', '?')}"
