"""What a decision of backend="auto" is keyed by: a group's signature (device, dtype,
shapes, threads) and its device's identity (what makes two devices interchangeable)."""

from __future__ import annotations

import platform
import threading
from typing import Dict

import torch

_lock = threading.Lock()  # guards _identities
_identities: Dict[torch.device, str] = {}


def signature(device, dtype, weights) -> Dict[str, object]:
    sig = {
        "device": str(device),
        "device_identity": identity(device),
        "dtype": str(dtype).replace("torch.", ""),
        "shapes": [list(w.shape) for w in weights],
    }
    if device.type == "cpu":
        sig["threads"] = torch.get_num_threads()
    return sig


def identity(device: torch.device) -> str:
    """What makes two devices interchangeable for a decision: the GPU model and compute
    capability, or the CPU model and the C++ kernel's instruction set."""
    with _lock:
        known = _identities.get(device)
    if known is not None:
        return known
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        ident = f"{props.name} sm_{props.major}{props.minor}"
    elif device.type == "cpu":
        from .backends import cpu

        ident = f"{cpu_model()} isa={cpu.kernel_isa()}"
    else:
        ident = device.type
    with _lock:
        _identities[device] = ident
    return ident


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
