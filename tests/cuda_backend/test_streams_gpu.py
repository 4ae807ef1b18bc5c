"""Stream order of what the GPU backends cache: a plan built on one stream and used at once
on another waits for its upload (plan_cache.py). GPU only (skips without one); the CPU
test of the rule with fake streams is in tests/cuda_backend/test_plan_cache.py. The GPU
qualification also runs this file under ``compute-sanitizer`` where it finds one
(laperm_kernels/gpucheck).
"""

from __future__ import annotations

import pytest
import torch

import laperm_kernels as lk
from laperm_kernels.ops import backends
from tests.helpers import assert_bitwise_equal

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SLEEP_CYCLES = 200_000_000  # ~0.1 s at 2 GHz: the upload queued behind it lands late


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_a_plan_built_on_one_stream_waits_for_its_upload_on_another(backend):
    impl = backends.BACKENDS[backend]
    if not impl.is_available():
        pytest.skip(f"{backend}: {impl.unavailable_reason()}")
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(300, 40), (64, 700), (8, 20000)]  # warp or small blocks, blocks, long rows
    ws = [torch.randn(s, device="cuda", generator=gen) for s in shapes]
    ss = [lk.sort_rows(torch.randn(s, device="cuda", generator=gen)) for s in shapes]
    want = [w.clone() for w in ws]
    for w, s in zip(want, ss):
        lk.rank_match_(w, s, backend="torch")
    first, second = torch.cuda.Stream(), torch.cuda.Stream()
    first.wait_stream(torch.cuda.current_stream())
    second.wait_stream(torch.cuda.current_stream())  # the tensors' values, nothing more
    with torch.cuda.stream(first):
        torch.cuda._sleep(SLEEP_CYCLES)
        impl.prepare(ws, ss)  # the plan: its tables' uploads queued behind the sleep
    with torch.cuda.stream(second):
        lk.rank_match_many_(ws, ss, backend=backend)  # finds the plan, launches at once
    torch.cuda.synchronize()
    for i, (w, e) in enumerate(zip(ws, want)):
        assert_bitwise_equal(w.cpu(), e.cpu(), f"tensor {i}")
