"""backend="auto": which backend runs a group, proven on the group's own tensors.

The first time ``rank_match_many_`` meets a group signature (device identity, dtype,
the tensors' shapes; on the CPU also the thread count), ``auto`` holds a *trial*: every
available backend that supports the group runs on a copy of the real tensors, its result
is compared bit for bit with the reference (``laperm_kernels.ops.reference``), and it is timed
(CUDA events on CUDA, wall clock on the CPU). The fastest bit-identical backend is kept for
that signature and dispatched to directly from then on. A backend that mismatches or
raises is never used again in the process for that device and dtype, and one warning
names it, the device, the dtype and the first differing tensor and row (running out of
memory only leaves it out of that trial). The caller's
tensors end with the reference result, on the trial's call too.

Timing is warm: each candidate runs once to warm up (plans, JIT compilation, module loads,
first allocations), timed apart, then at least once and at most ``MAX_TIMED_RUNS`` times
more, stopping once the timed runs pass ``TIME_BUDGET_S``; its time is their median.
The reference runs once per candidate, tensor by tensor, to check it; the first of those
runs is the ``torch`` backend's warm-up and the others its timed runs (when there is no
other, the run that leaves the reference result in the caller's tensors is timed). Cost,
once per signature: about two reference runs and two to four runs of each candidate.
Memory: one copy of the group, plus one tensor's reference (the tensor, its order keys
and its int64 sort indices) at a time.

Decisions persist across processes (decision_store.py), keyed by the device's identity
and the environment, so a restarted job does not pay the trial again. Only complete
trials are saved: every candidate that could win was timed warm, and none was left out
for lack of memory. A saved decision carries its verdicts, so a backend banned in an
earlier process stays banned, and the process that finds the ban warns once, saying when
and why, and how to test the backend again.

No trial runs inside CUDA graph capture (a cached decision is used there, else
``graph_capture.NotPreparedForCapture`` asks for one call before capturing), nor while
torch.compile traces: rank_match.py runs
eagerly (``torch.compiler.disable``), so dynamo never reaches this module. With
``LAPERM_AUTOTUNE=0`` no trial runs at all: ``auto`` takes the first available backend of
``backends.AUTO_ORDER``. An explicit backend never goes through this module.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
import warnings
from collections import OrderedDict
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import torch

from . import backends as _backends
from . import decision_store, graph_capture
from .backends import plan_cache
from .decision_store import MAX_DECISIONS, Decision, Verdict
from .reference import rank_match_reference_, rows_and_length, same_width_int
from .signature import identity
from .signature import signature as group_signature
from .timing import DeviceTimer, synchronize

MAX_TIMED_RUNS = 3
TIME_BUDGET_S = 0.5  # per candidate, after its warm-up run and at least one timed run
BANNING = ("mismatch", "error")  # verdicts that ban a backend (out of memory does not)

_lock = threading.Lock()  # guards the dicts below
_trial_lock = threading.RLock()  # one trial at a time; a waiting thread then finds its result
_decisions: "OrderedDict[tuple, Decision]" = OrderedDict()
_banned: Dict[Tuple[str, torch.dtype], Dict[str, str]] = {}  # (device id, dtype) -> {backend: why}
_warned_bans: set = set()  # (backend, device identity, dtype) announced from disk
_cpu_keys: Dict[int, Tuple[int, ...]] = {}  # threads -> cpu_keys(); emptied as _decisions changes


# --- public ---------------------------------------------------------------------------


def report() -> List[Dict[str, object]]:
    """Every decision this process has made or loaded, oldest first, as plain dicts:
    ``{"signature", "backend", "source", "candidates": [{"backend", "verdict",
    "seconds", "detail"}]}``."""
    with _lock:
        return [d.as_dict() for d in _decisions.values()]


def reset() -> None:
    """Forgets this process's decisions, bans and warnings (the disk cache stays)."""
    with _lock:
        _decisions.clear()
        _cpu_keys.clear()
        _banned.clear()
        _warned_bans.clear()
    decision_store.forget()


def autotune_enabled() -> bool:
    return os.environ.get("LAPERM_AUTOTUNE", "1") != "0"


# --- what rank_match.py calls ----------------------------------------------------------------


def decided(
    device: torch.device,
    dtype: torch.dtype,
    weights: Sequence[torch.Tensor],
    shapes_key: Optional[Hashable] = None,
) -> Optional[str]:
    """The backend for this group if no trial is needed (a decision made or loaded, a
    single candidate, autotuning off, tracing), else None: call :func:`trial`.

    Raises ``graph_capture.NotPreparedForCapture`` inside CUDA graph capture when the
    group has no decision yet, before anything is touched. ``shapes_key`` stands for the
    weights' shapes (rank_match.py has a hash of them from the extension)."""
    key = _key(device, dtype, weights, shapes_key)
    with _lock:
        decision = _decisions.get(key)
        if decision is not None:
            _decisions.move_to_end(key)
            return decision.backend
    if not autotune_enabled():
        return _candidates(device, dtype)[0]  # cheap to find again: not recorded
    loaded = _from_disk(key, device, dtype, weights)  # its bans apply from now on
    if loaded is not None:
        return loaded.backend
    names = _candidates(device, dtype)
    if len(names) == 1:
        return names[0]
    if graph_capture.capturing(device):
        raise graph_capture.not_prepared(
            f"backend='auto''s choice for these {dtype} tensors on {device} (its trial "
            "cannot run in a capture; or pass an explicit backend)"
        )
    return None


def cpu_keys() -> Tuple[int, ...]:
    """The shapes keys (csrc/call_check.cpp's group keys) of the CPU groups decided for the
    C++ kernel at the current thread count: rank_match.py's native check runs those groups itself,
    as :func:`decided` would send them to ``"cpu"``. (Such calls skip :func:`decided`, so
    they do not refresh their decision's place in the LRU order.)"""
    threads = torch.get_num_threads()
    keys = _cpu_keys.get(threads)
    if keys is None:
        with _lock:
            keys = _cpu_keys[threads] = tuple(
                key[3]
                for key, d in _decisions.items()
                if key[0].type == "cpu"
                and key[2] == threads
                and d.backend == "cpu"
                and isinstance(key[3], int)
            )
    return keys


def trial(
    device: torch.device,
    dtype: torch.dtype,
    weights: Sequence[torch.Tensor],
    sorted_inits: Sequence[torch.Tensor],
    shapes_key: Optional[Hashable] = None,
) -> str:
    """Runs the trial on a validated group (contiguous tensors, one device and dtype),
    records the decision and leaves the reference result in ``weights``. Returns the
    backend chosen for the next calls."""
    with _trial_lock:
        # another thread may have decided meanwhile
        name = decided(device, dtype, weights, shapes_key)
        if name is not None:
            _backends.BACKENDS[name].run(weights, sorted_inits)
            return name
        guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with guard:
            decision = _run_trial(device, dtype, list(weights), list(sorted_inits))
        _remember(_key(device, dtype, weights, shapes_key), decision)
        if decision.source == "trial" and decision.complete:
            decision_store.save(decision.signature, decision)
        return decision.backend


# --- the trial ------------------------------------------------------------------------


def _run_trial(device, dtype, weights, sorted_inits) -> Decision:
    signature = group_signature(device, dtype, weights)
    decided_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    names = _candidates(device, dtype)
    try:
        copies = [w.clone() for w in weights]
    except (
        torch.OutOfMemoryError,
        MemoryError,
        RuntimeError,
    ) as e:  # no room for a trial: run as is
        _backends.BACKENDS[names[0]].run(weights, sorted_inits)
        return Decision(
            signature,
            names[0],
            "fixed order (no memory for a trial)",
            [Verdict(names[0], "not tried", detail=f"{type(e).__name__}: {e}")],
            decided_at,
        )

    verdicts: List[Verdict] = []
    reference_times: List[float] = []  # the reference's runs: a warm-up, then timed
    copies_hold_reference = False
    try:
        for name in (n for n in names if n != "torch"):
            verdict = _try(name, device, dtype, weights, sorted_inits, copies, reference_times)
            verdicts.append(verdict)
            copies_hold_reference = verdict.verdict == "bit-identical"
        # The reference needs a timed run after its warm-up when a rival is to be beaten.
        rivals = any(v.verdict == "bit-identical" for v in verdicts)
        time_reference = "torch" in names and rivals and len(reference_times) < 2
        if copies_hold_reference and not time_reference:
            for w, c in zip(weights, copies):  # the last candidate's output, checked
                w.copy_(c)
        else:  # the caller's result from the reference, timed
            timer = DeviceTimer(device)
            synchronize(device)
            timer.start()
            for w, s in zip(weights, sorted_inits):
                rank_match_reference_(w, s)
            seconds = timer.stop()
            if time_reference:
                reference_times.append(seconds)
    finally:
        plan_cache.forget(c.data_ptr() for c in copies)  # plans of the copies: dead now
    del copies

    if "torch" in names:
        verdicts.append(
            Verdict(
                "torch",
                "reference",
                statistics.median(reference_times[1:]) if len(reference_times) > 1 else None,
                "its runs while checking the others",
                reference_times[0] if reference_times else None,
                max(len(reference_times) - 1, 0),
            )
        )
    timed = [
        v for v in verdicts if v.verdict in ("bit-identical", "reference") and v.seconds is not None
    ]
    best = min(timed, key=lambda v: v.seconds).backend if timed else "torch"
    return Decision(signature, best, "trial", verdicts, decided_at)


def _try(name, device, dtype, weights, sorted_inits, copies, reference_times) -> Verdict:
    impl = _backends.BACKENDS[name]
    timer = DeviceTimer(device)
    try:
        times: List[float] = []  # times[0] is the warm-up; at least one timed run follows
        while len(times) <= MAX_TIMED_RUNS and (len(times) < 2 or sum(times[1:]) <= TIME_BUDGET_S):
            for c, w in zip(copies, weights):
                c.copy_(w)
            synchronize(device)
            timer.start()
            impl.run(copies, sorted_inits)
            times.append(timer.stop())
        seconds = statistics.median(times[1:])
        mismatch, ref_seconds = _first_mismatch(copies, weights, sorted_inits, timer)
        reference_times.append(ref_seconds)
    except (torch.OutOfMemoryError, MemoryError) as e:  # the group's size, not a broken kernel
        return Verdict(name, "out of memory", None, f"in the trial: {e}")
    except Exception as e:  # noqa: BLE001  (any other failure disqualifies the backend)
        detail = f"raised {type(e).__name__}: {e}"
        _ban(name, device, dtype, detail)
        return Verdict(name, "error", None, detail)
    if mismatch is not None:
        _ban(name, device, dtype, mismatch)
        return Verdict(name, "mismatch", seconds, mismatch, times[0], len(times) - 1)
    return Verdict(name, "bit-identical", seconds, "", times[0], len(times) - 1)


def _first_mismatch(outputs, weights, sorted_inits, timer) -> Tuple[Optional[str], float]:
    """Where ``outputs`` first differ from the reference applied to ``weights`` (None if
    nowhere), and the seconds the reference took, tensor by tensor."""
    seconds, found = 0.0, None
    ints = same_width_int(weights[0].dtype)
    for i, (out, w, s) in enumerate(zip(outputs, weights, sorted_inits)):
        expected = w.clone()
        synchronize(w.device)
        timer.start()
        rank_match_reference_(expected, s)
        seconds += timer.stop()
        if found is None and w.numel():
            rows, length = rows_and_length(w)
            differs = (out.view(ints) != expected.view(ints)).reshape(rows, length).any(dim=1)
            bad = differs.nonzero()
            if len(bad):
                found = (
                    f"tensor {i} (shape {tuple(w.shape)}), row {int(bad[0])}: "
                    f"{int(differs.sum())} of {rows} rows differ from the reference"
                )
    return found, seconds


def _ban(name, device, dtype, why) -> None:
    ident = identity(device)
    _add_ban(name, ident, dtype, why)
    warnings.warn(
        f"laperm_kernels: backend {name!r} failed its check on {ident} "
        f"({device}) for {dtype}: {why}. It will not be used again for {dtype} on this "
        "device, in this process nor (through the dispatch cache) in later ones; "
        "backend='auto' uses the others. Please report this with "
        "laperm_kernels.dispatch_report().",
        RuntimeWarning,
        stacklevel=4,
    )


def _add_ban(name: str, ident: str, dtype: torch.dtype, why: str) -> bool:
    """Never again ``name`` for this device identity and dtype: also not for the
    signatures already decided in its favour. Returns whether it is a new ban."""
    dtype_name = str(dtype).replace("torch.", "")
    with _lock:
        bans = _banned.setdefault((ident, dtype), {})
        new = name not in bans
        bans.setdefault(name, why)
        for key in [
            k
            for k, d in _decisions.items()
            if d.backend == name
            and d.signature["device_identity"] == ident
            and d.signature["dtype"] == dtype_name
        ]:
            del _decisions[key]
        _cpu_keys.clear()
    return new


# --- candidates and signatures --------------------------------------------------------


def _candidates(device: torch.device, dtype: torch.dtype) -> List[str]:
    """``auto``'s backends for this device and dtype, in AUTO_ORDER, without banned ones;
    the last is always one that runs anywhere (``torch``)."""
    ident = identity(device)
    with _lock:
        banned = dict(_banned.get((ident, dtype), {}))
    names = [
        n
        for n in _backends.AUTO_ORDER.get(device.type, ["torch"])
        if n not in banned
        and _backends.BACKENDS[n].is_available()
        and _backends.BACKENDS[n].supports(device, dtype)
    ]
    return names or ["torch"]


def _key(device, dtype, weights, shapes_key=None) -> tuple:
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    if shapes_key is None:
        shapes_key = tuple(tuple(w.shape) for w in weights)
    return (device, dtype, threads, shapes_key)


def _remember(key: tuple, decision: Decision) -> None:
    with _lock:
        _decisions[key] = decision
        _decisions.move_to_end(key)
        while len(_decisions) > MAX_DECISIONS:
            _decisions.popitem(last=False)
        _cpu_keys.clear()


# --- decisions from and to the disk cache (decision_store.py: the file) ---------------


def _from_disk(key, device, dtype, weights) -> Optional[Decision]:
    """The saved decision for this group, if its backend can run here and now. The bans
    it records apply in this process from now on, each announced once."""
    decision = decision_store.load(group_signature(device, dtype, weights))
    if decision is None:
        return None
    for v in decision.candidates:
        if v.verdict in BANNING:
            _ban_from_disk(v, device, dtype, decision.decided_at)
    if decision.backend not in _candidates(device, dtype):
        return None  # unavailable or banned now
    _remember(key, decision)
    return decision


def _ban_from_disk(verdict: Verdict, device, dtype, decided_at: str) -> None:
    ident = identity(device)
    _add_ban(verdict.backend, ident, dtype, verdict.detail)
    with _lock:
        announce = (verdict.backend, ident, dtype) not in _warned_bans
        _warned_bans.add((verdict.backend, ident, dtype))
    if announce:
        warnings.warn(
            f"laperm_kernels: backend {verdict.backend!r} is banned on {ident} ({device}) for "
            f"{dtype}: a trial on {decided_at or 'an unknown date'} found it "
            f"{verdict.verdict} ({verdict.detail}); backend='auto' uses the others. To test "
            f"it again, delete the file {decision_store.cache_path()} (or its entries naming "
            f"{verdict.backend!r}) and restart.",
            RuntimeWarning,
            stacklevel=6,
        )
