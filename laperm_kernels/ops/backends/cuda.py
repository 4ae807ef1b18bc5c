"""The ``"cuda"`` backend: the hand-written CUDA C++ kernels of csrc/cuda.

A validated group (contiguous CUDA tensors of one device and dtype) is planned once by
``laperm::cuda_row_plan`` (host C++, csrc/cuda/host/plan.h describes the pipeline): every
row of every tensor goes to a size class (warp, one of eight block tiles, large), and each
class becomes one launch over a device table of row descriptors. The plan depends only on
addresses and shapes, so it is cached here: the LaPerm optimizer, syncing the same
parameters every k steps, pays a few host checks and one launch per size class (ResNet-50:
7 launches). The plan's tables go up by an asynchronous copy from pinned memory, so
building one never waits for the GPU; during CUDA graph capture none is built (a miss
raises: plan_cache.py). :func:`prepare` also allocates the large rows' scratch
(``laperm::cuda_plan_scratch``), so that the ops allocate every group's before any group
runs; ``laperm::rank_match_planned_`` checks that a plan matches its tensors before
launching. The size classes' constants live in C++
(csrc/cuda/size_classes.h); Python reads them from the extension (:func:`size_classes`).

Available when the extension was built against a CUDA torch (``compiled()``) and a CUDA
device is present; otherwise ``unavailable_reason()`` says which is missing.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from ... import _extension
from ..reference import SUPPORTED_DTYPES
from .plan_cache import PlanCache

name = "cuda"

Plan = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # host words, rows, segment offsets
_plans: "PlanCache[Plan]" = PlanCache(16, what="launch plan of the cuda backend")


class Kernels(NamedTuple):
    """What runs a plan: the CUDA ops, or in tests their CPU emulation
    (``laperm_testing::emulated_plan_scratch``, ``laperm_testing::emulate_planned_``)."""

    plan_scratch: Callable[[torch.Tensor, torch.device], torch.Tensor]
    run_planned: Callable[..., None]


_kernels = Kernels(
    lambda plan, device: torch.ops.laperm.cuda_plan_scratch(plan, device),
    lambda *args: torch.ops.laperm.rank_match_planned_(*args),
)


def compiled() -> bool:
    """Whether laperm_kernels._C contains the CUDA kernels (built against a CUDA torch)."""
    return _extension.is_loaded() and "cuda" in torch.ops.laperm.compiled_backends()


def is_available() -> bool:
    return compiled() and torch.cuda.is_available()


def unavailable_reason() -> str:
    if not _extension.is_loaded():
        return (
            f"the C++ extension laperm_kernels._C did not load ({_extension.load_error()}); "
            "build it with `pip install --no-build-isolation -e .`"
        )
    if not compiled():
        return (
            f"laperm_kernels._C was built without the CUDA kernels (torch {torch.__version__}"
            f" is {'a CPU build' if torch.version.cuda is None else 'a CUDA build'}); "
            "rebuild against a CUDA torch with CUDA_HOME set to the toolkit's root "
            "(README: CUDA backend)"
        )
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return ""


def supports(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and dtype in SUPPORTED_DTYPES


def prepare(
    weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]
) -> Callable[[], None]:
    """Plans the group (or finds its plan) and allocates its large rows' scratch: the
    planner's size limits and running out of memory raise here. Returns the launch."""
    weights, sorted_inits = list(weights), list(sorted_inits)
    plan = plan_for(weights, sorted_inits)
    # segment offsets only where there are large rows: else no scratch, and no op call
    scratch = _kernels.plan_scratch(plan[0], weights[0].device) if plan[2].numel() else None
    return functools.partial(_kernels.run_planned, weights, sorted_inits, *plan, scratch)


def run(weights: Sequence[torch.Tensor], sorted_inits: Sequence[torch.Tensor]) -> None:
    prepare(weights, sorted_inits)()


@functools.lru_cache(maxsize=None)
def size_classes():
    """The size classes' constants as the extension exports them (csrc/cuda/size_classes.h,
    ``laperm::cuda_size_classes``): ``warp_max_length``, ``block_tiles`` (elements, by
    tile index), ``block_threads``, ``block_items``, ``default_batch_items``,
    ``max_batch_items``, ``max_batch_rows``, ``device_sort_min_length``,
    ``max_warp_class_rows``, ``max_block_class_rows``."""
    return _extension.named_results(torch.ops.laperm.cuda_size_classes.default, "SizeClasses")


@functools.lru_cache(maxsize=None)
def plan_layout():
    """The layout of a plan's host words (csrc/cuda/host/plan_encoding.h,
    ``laperm_testing::cuda_plan_layout``): ``magic``, ``header_words``, ``tensor_words``,
    ``launch_words``, ``batch_words``. For tests that forge plans; to read a plan, use
    :func:`describe_plan`."""
    return _extension.named_results(torch.ops.laperm_testing.cuda_plan_layout.default, "PlanLayout")


def largest_block_tile(device: torch.device, dtype: torch.dtype) -> int:
    """The longest row one thread block sorts on this device (shared memory permitting)."""
    props = torch.cuda.get_device_properties(device)
    smem = getattr(props, "shared_memory_per_block_optin", 48 * 1024)
    return torch.ops.laperm.cuda_largest_block_tile(dtype, smem)


def plan_for(
    weights: List[torch.Tensor],
    sorted_inits: List[torch.Tensor],
    *,
    max_block_tile: Optional[int] = None,
    max_batch_items: Optional[int] = None,
) -> Plan:
    """The plan of a group, from the cache when the same addresses and shapes were planned.

    ``max_block_tile`` defaults to what the device's shared memory allows and
    ``max_batch_items`` to the planner's default; tests pass them explicitly to plan CPU
    tensors for the test-only CPU emulation (``laperm_testing::emulate_planned_``).
    """
    device, dtype = weights[0].device, weights[0].dtype
    if max_block_tile is None:
        max_block_tile = largest_block_tile(device, dtype)
    if max_batch_items is None:
        max_batch_items = size_classes().default_batch_items
    return _plans.get(
        (device, dtype, max_block_tile, max_batch_items),
        weights,
        sorted_inits,
        lambda: torch.ops.laperm.cuda_row_plan(
            weights, sorted_inits, max_block_tile, max_batch_items
        ),
        device_tables=lambda plan: plan[1:],
    )  # rows, segment offsets; plan[0] is host words


def describe_plan(plan: Plan) -> Dict[str, object]:
    """A plan's launches, readable: for inspection, the benchmark and tests.

    Returns ``{"dtype", "tensors", "rows", "launches": [(class, first row, rows)],
    "large_batches": [(first row, rows, items, longest row, first offset)],
    "max_batch_items"}``; a launch's class is ``"warp"`` or ``"block<tile>"``. The plan's
    words are decoded (and checked) by the extension: ``laperm_testing::cuda_decode_plan``.
    """
    dtype, rows, _, max_items, tensors, launches, batches = (
        torch.ops.laperm_testing.cuda_decode_plan(plan[0])
    )
    tiles = size_classes().block_tiles
    return {
        "dtype": dtype,
        "tensors": len(tensors),
        "rows": rows,
        "launches": [
            ("warp" if tile < 0 else f"block{tiles[tile]}", begin, count)
            for tile, begin, count in launches.tolist()
        ],
        "large_batches": [tuple(b) for b in batches.tolist()],
        "max_batch_items": max_items,
    }
