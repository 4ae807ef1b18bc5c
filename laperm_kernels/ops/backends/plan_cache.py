"""An LRU of what GPU launches reuse: launch plans, and ops/rank_match.py's staging buffers.

A plan (row tables, launch list) depends only on the tensors' addresses and row shapes
and on the backend's settings, so an optimizer syncing the same parameters every k steps
builds it once. Keys hold addresses, never tensors: the cache keeps no weight alive, and a
plan found for reused addresses of the same shapes is exactly the plan they need.

What a launch reads must outlive it, also once the LRU has dropped the entry:

* a launch queued on some stream: each time an entry is handed out, its device tensors
  are marked as used by the current stream (``Tensor.record_stream``), so the caching
  allocator does not reuse their memory before the work queued there has run;
* a launch on another stream than the entry's last: an entry remembers the stream it was
  built on (its tables' uploads are queued there) and then the one it was last handed out
  on; handed out on another, that stream first waits for the work queued so far on the
  last one (``wait_stream``): the upload of a plan's tables, and the kernels that still
  read or write a staging buffer. Nothing waits while a call stays on one stream. During
  capture there is no wait (``torch.cuda.graph`` synchronises the device before it
  begins) and the last stream is left as it was;
* a CUDA graph: an entry handed out during capture is read again at every replay, and
  nothing says when the graph is freed, so such entries are kept until
  :func:`release_captured`. Capturing the same tensors again reuses the same entries.
  ``max_captured`` bounds how many a cache keeps (a capture past that raises, naming the
  fix); None keeps every one: the staging buffers, of which one graph needs one per
  non-contiguous weight (the launch plans, one per group of a captured call, still bound
  how many distinct captures keep entries).

During capture nothing is built: building uploads tables and may compile, which would
synchronise with the host. A miss there raises ``graph_capture.NotPreparedForCapture``.

``forget`` drops the entries that mention given addresses (the dispatch trial's copies,
which are freed right after it). One lock makes every method safe from several threads.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Iterable, Optional, Sequence, TypeVar

import torch

from .. import graph_capture
from ..reference import rows_and_length

T = TypeVar("T")

MAX_CAPTURED = 64  # entries one cache keeps for CUDA graphs until release_captured()

_caches: "weakref.WeakSet[PlanCache]" = weakref.WeakSet()


# [the entry, the addresses it stands for, the stream it was last handed out on (None
# off CUDA)]
Entry = list


def current_stream(device: torch.device) -> "Optional[torch.cuda.Stream]":
    """``device``'s current stream; None for a device without streams."""
    return torch.cuda.current_stream(device) if device.type == "cuda" else None


def _hand_out_on(entry: Entry, stream) -> None:
    """Orders work queued now on ``stream`` after all that was queued on the entry's last
    stream (its uploads, or the last call's kernels), then makes ``stream`` its last."""
    last = entry[2]
    if last is not None and stream != last:
        stream.wait_stream(last)
    entry[2] = stream


class PlanCache(Generic[T]):
    def __init__(
        self,
        size: int = 16,
        max_captured: Optional[int] = MAX_CAPTURED,
        what: str = "plan",
        whats: Optional[str] = None,
    ):
        self.size = size
        self.max_captured = max_captured
        # names the entries in errors: "launch plan of the cuda backend" (and its plural)
        self.what = what
        self.whats = whats or f"{what}s"
        self._entries: "OrderedDict[Hashable, Entry]" = OrderedDict()
        self._captured: "dict[Hashable, Entry]" = {}
        self._lock = threading.Lock()
        _caches.add(self)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries.keys() | self._captured.keys())

    def captured(self) -> int:
        """How many entries are kept for CUDA graphs."""
        with self._lock:
            return len(self._captured)

    def get(
        self,
        settings: tuple,
        weights: Sequence[torch.Tensor],
        sorted_inits: Sequence[torch.Tensor],
        build: Callable[[], T],
        device_tables: Callable[[T], Iterable[torch.Tensor]] = lambda plan: (),
    ) -> T:
        """The plan for these tensors and settings, built by ``build()`` on a miss.
        ``device_tables(plan)`` lists the device tensors its launches read."""
        rows = tuple(
            (w.data_ptr(), s.data_ptr(), *rows_and_length(w)) for w, s in zip(weights, sorted_inits)
        )
        addresses = frozenset(a for r in rows for a in r[:2])
        return self.lookup((settings, rows), addresses, weights[0].device, build, device_tables)

    def lookup(
        self,
        key: Hashable,
        addresses: frozenset,
        device: torch.device,
        build: Callable[[], T],
        device_tables: Callable[[T], Iterable[torch.Tensor]] = lambda entry: (),
    ) -> T:
        """The entry for ``key`` (which stands for tensors at ``addresses`` on ``device``),
        built by ``build()`` on a miss outside capture."""
        capturing = graph_capture.capturing(device)
        with self._lock:
            found = self._captured.get(key) or self._entries.get(key)
            if found is None:
                if capturing:
                    raise graph_capture.not_prepared(f"a {self.what}")
                found = self._entries[key] = [build(), addresses, current_stream(device)]
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            elif key in self._entries:
                self._entries.move_to_end(key)
            if capturing and key not in self._captured:
                limit = self.max_captured
                if limit is not None and len(self._captured) >= limit:
                    raise graph_capture.NotPreparedForCapture(
                        f"this capture needs one more {self.what}, but {limit} "
                        f"{self.whats} (the most kept) are already kept for captured CUDA "
                        "graphs: once the graphs that used them are freed, call "
                        "laperm_kernels.release_captured_plans(). Nothing was modified."
                    )
                self._captured[key] = found
            if not capturing:  # a capture may not wait on work queued outside it
                _hand_out_on(found, current_stream(device))
        if not capturing:  # record_stream is not for use inside a capture
            for table in device_tables(found[0]):
                if table.is_cuda:
                    table.record_stream(torch.cuda.current_stream(table.device))
        return found[0]

    def forget(self, addresses: Iterable[int]) -> None:
        """Drops the LRU entries for tensors at any of ``addresses`` (not those kept for
        captured graphs, which still read them)."""
        gone = set(addresses)
        with self._lock:
            for key in [k for k, (_, a, _) in self._entries.items() if not gone.isdisjoint(a)]:
                del self._entries[key]

    def release_captured(self) -> None:
        with self._lock:
            self._captured.clear()


def forget(addresses: Iterable[int]) -> None:
    """:meth:`PlanCache.forget` on every cache."""
    addresses = frozenset(addresses)
    for cache in list(_caches):
        cache.forget(addresses)


def release_captured() -> None:
    """Lets every cache drop what it kept for CUDA graphs: call it once the graphs that
    captured rank-matching calls are freed (a graph still replayed after this may read
    freed memory)."""
    for cache in list(_caches):
        cache.release_captured()
