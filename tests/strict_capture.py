"""A strict CPU stand-in for CUDA graph capture, used by every capture test on the CPU.

While it is on, ``graph_capture.capturing`` answers True for every device (CPU tensors
play the device's), and each thing a real capture forbids raises :class:`CaptureViolation`
naming what was attempted:

* a blocking host read of a tensor's value (``item``, ``tolist``, ``__bool__``,
  ``__int__``, ``__float__``, ``__index__``, ``numpy``, ``.cpu()``);
* an event query or synchronise, a stream query or synchronise, a device synchronise
  (``torch.cuda``'s and ``laperm_kernels.ops.timing.synchronize``);
* pinned memory (``pin_memory()``, ``pin_memory=True``) and copies that upload from the
  host (``non_blocking=True``, or ``.to()`` another device): their source would be
  recycled while the graph still reads it at replay.

A plan or staging buffer no eager call made raises ``NotPreparedForCapture`` as the caches
do anyway (plan_cache.py). :class:`StandInEvent` is what a CUDA sync leaves in a pending
``check_finite`` on the CPU: an event whose query raises under the stand-in.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

from laperm_kernels.ops import graph_capture, timing


class CaptureViolation(RuntimeError):
    """Something was attempted that a CUDA graph capture does not permit."""


HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
}
_COPIES = {torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.cuda}


def _violation(what: str) -> CaptureViolation:
    return CaptureViolation(f"{what} during CUDA graph capture (strict stand-in)")


class _RefuseInCapture(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func in HOST_READS:
            raise _violation(f"a host read of a tensor value (Tensor.{name})")
        if func is torch.Tensor.pin_memory or kwargs.get("pin_memory"):
            raise _violation(f"a pinned-memory allocation ({name})")
        if func in _COPIES and (kwargs.get("non_blocking") or _moves(args, kwargs)):
            raise _violation(f"an upload from host memory (Tensor.{name})")
        return func(*args, **kwargs)


def _moves(args, kwargs) -> bool:
    """Whether a ``.to(...)`` call names a device other than the tensor's."""
    target = kwargs.get("device")
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            target = a
    return target is not None and torch.device(target) != args[0].device


class StandInEvent:
    """A CUDA event as check_finite keeps one: done, but not to be queried in a capture."""

    on = False  # set while the stand-in is on

    def query(self) -> bool:
        if StandInEvent.on:
            raise _violation("an event query (Event.query)")
        return True

    def synchronize(self) -> None:
        if StandInEvent.on:
            raise _violation("an event synchronise (Event.synchronize)")


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise _violation(what)

    return refused


@contextlib.contextmanager
def strict_capture(monkeypatch):
    """Capture made to look on, strictly, for the ``with`` block."""
    with monkeypatch.context() as m:
        m.setattr(graph_capture, "capturing", lambda device: True)
        m.setattr(timing, "synchronize", _refuse("a device synchronise (timing.synchronize)"))
        m.setattr(torch.cuda, "synchronize", _refuse("a device synchronise"))
        for cls, method in (
            (torch.cuda.Event, "query"),
            (torch.cuda.Event, "synchronize"),
            (torch.cuda.Stream, "query"),
            (torch.cuda.Stream, "synchronize"),
        ):
            m.setattr(cls, method, _refuse(f"{cls.__name__}.{method}"))
        m.setattr(StandInEvent, "on", True)
        with _RefuseInCapture():
            yield
