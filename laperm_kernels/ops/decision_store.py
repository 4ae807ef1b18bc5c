"""backend="auto"'s decisions (:class:`Decision`, its :class:`Verdict` per candidate) and
their store: ``load(signature)`` / ``save(signature, decision)``, across processes in one
JSON file.

The file is ``dispatch-v2.json`` under ``LAPERM_CACHE_DIR`` (default
``$XDG_CACHE_HOME/laperm_kernels``, else ``~/.cache/laperm_kernels``): one entry per group
signature and environment (the device's identity and driver, the versions of torch,
triton and this package, a fingerprint of the compiled kernels), each ``{"backend",
"decided_at", "candidates"}``. It is read once per process (until :func:`forget`); an
unreadable or corrupt file (anything ``json`` cannot read, or not shaped as decisions)
is ignored with one warning; writes merge into the file and replace it atomically (DDP
ranks may write at once).
When a decision is trusted, and what its verdicts ban, is dispatch.py's policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import warnings
from typing import Dict, List, Optional

import torch

CACHE_FILE = "dispatch-v2.json"  # v1 files may hold decisions timed cold: not read
MAX_DECISIONS = 512  # in memory (dispatch.py) and on disk; the oldest go first


@dataclasses.dataclass
class Verdict:
    backend: str
    verdict: str  # "bit-identical", "reference", "mismatch", "error",
    #                                   "out of memory", "not tried"
    seconds: Optional[float] = None  # median of the timed runs (after the warm-up)
    detail: str = ""
    warmup_seconds: Optional[float] = None  # the first run: compilation, first use
    runs: int = 0  # timed runs

    def text(self) -> str:
        """One line: verdict, time and warm-up time, detail."""
        out = f"{self.backend} {self.verdict}"
        if self.seconds is not None:
            out += f" {self.seconds * 1e3:.3f} ms"
            out += f" (median of {self.runs})" if self.runs else ""
        if self.warmup_seconds is not None:
            out += f", warm-up {self.warmup_seconds * 1e3:.3f} ms"
        return out + (f": {self.detail}" if self.detail else "")


@dataclasses.dataclass
class Decision:
    signature: Dict[str, object]
    backend: str
    source: str  # "trial", "disk cache", "only candidate", ...
    candidates: List[Verdict] = dataclasses.field(default_factory=list)
    decided_at: str = ""  # when the trial ran (UTC, ISO 8601)

    @property
    def complete(self) -> bool:
        """Every candidate that could have won was timed warm (or was the only one), and
        none was left out for lack of memory: only such a decision is saved."""
        able = [v for v in self.candidates if v.verdict in ("bit-identical", "reference")]
        return not any(v.verdict in ("out of memory", "not tried") for v in self.candidates) and (
            len(able) <= 1 or all(v.runs >= 1 for v in able)
        )

    def as_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


_lock = threading.Lock()  # guards the file's copy below, and the writes
_disk: Optional[Dict[str, dict]] = None
_warned = False


def cache_path() -> str:
    root = os.environ.get("LAPERM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "laperm_kernels",
    )
    return os.path.join(root, CACHE_FILE)


def forget() -> None:
    """Reads the file again at the next look-up, and may warn again."""
    global _disk, _warned
    with _lock:
        _disk = None
        _warned = False


def load(signature: Dict[str, object]) -> Optional[Decision]:
    """The decision saved for a group of this signature in this environment, or None."""
    saved = _entry(_key(signature))
    if not saved:
        return None
    decided_at = saved.get("decided_at")
    return Decision(
        signature,
        saved["backend"],
        "disk cache",
        _verdicts(saved),
        decided_at if isinstance(decided_at, str) else "",
    )


def save(signature: Dict[str, object], decision: Decision) -> None:
    """Merges the decision into the file (the oldest go past ``MAX_DECISIONS``) and
    replaces it atomically."""
    _write(
        _key(signature),
        {
            "backend": decision.backend,
            "decided_at": decision.decided_at,
            "candidates": [dataclasses.asdict(v) for v in decision.candidates],
        },
    )


def _key(signature: Dict[str, object]) -> str:
    """The entry's key: a group's signature (its device by type), and the environment."""
    device_type = torch.device(str(signature["device"])).type
    return json.dumps(
        {**signature, "device": device_type, "environment": _environment()}, sort_keys=True
    )


def _entry(disk_key: str) -> Optional[dict]:
    """The saved entry under ``disk_key``, or None."""
    global _disk
    with _lock:
        if _disk is None:
            _disk = _read()
        return _disk.get(disk_key)


def _verdicts(saved: dict) -> List[Verdict]:
    """An entry's verdicts; those that do not parse are left out."""
    fields = {f.name for f in dataclasses.fields(Verdict)}
    out = []
    for v in saved.get("candidates", []):
        if (
            isinstance(v, dict)
            and isinstance(v.get("backend"), str)
            and isinstance(v.get("verdict"), str)
        ):
            out.append(Verdict(**{k: x for k, x in v.items() if k in fields}))
    return out


def _write(disk_key: str, saved: dict) -> None:
    global _disk, _warned
    path = cache_path()
    with _lock:
        data = _read()
        data.pop(disk_key, None)
        data[disk_key] = saved
        while len(data) > MAX_DECISIONS:
            data.pop(next(iter(data)))
        _disk = data
        tmp = None
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".dispatch-")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=0)
            os.replace(tmp, path)
        except OSError as e:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            if not _warned:
                _warned = True
                warnings.warn(
                    f"laperm_kernels: cannot write the dispatch cache {path} ({e}); "
                    "decisions last for this process only",
                    RuntimeWarning,
                    stacklevel=5,
                )


def _read() -> Dict[str, dict]:
    global _warned
    path = cache_path()
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or not all(
            isinstance(v, dict)
            and isinstance(v.get("backend"), str)
            and isinstance(v.get("candidates", []), list)
            for v in data.values()
        ):
            raise ValueError("not a JSON object of decisions")
        return data
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except Exception as e:  # noqa: BLE001  (OSError, ValueError, RecursionError, ...)
        if not _warned:
            _warned = True
            warnings.warn(
                f"laperm_kernels: ignoring the dispatch cache {path} "
                f"({type(e).__name__}: {e}); backend='auto' will run its trials "
                "again",
                RuntimeWarning,
                stacklevel=6,
            )
        return {}


def _environment() -> Dict[str, str]:
    """What a decision on disk is only valid for, beside the device and the shapes."""
    from .. import _extension
    from .._version import __version__

    env = {
        "torch": torch.__version__,
        "laperm_kernels": __version__,
        "kernels": _kernels_fingerprint(_extension),
    }
    try:
        from importlib.metadata import version

        env["triton"] = version("triton")
    except Exception:  # noqa: BLE001  (not installed)
        env["triton"] = "none"
    if torch.cuda.is_available():
        driver = getattr(torch._C, "_cuda_getDriverVersion", None)
        env["cuda"] = f"{torch.version.cuda} driver {driver() if driver else 'unknown'}"
    return env


def _kernels_fingerprint(extension) -> str:
    """Size and modification time of the compiled extension and the Triton sources: a
    rebuilt kernel is a new kernel, whatever the version says."""
    kernels = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backends", "triton")
    files = [os.path.join(kernels, f) for f in sorted(os.listdir(kernels))]
    if extension.is_loaded():
        files.append(extension.library_path())
    h = hashlib.sha256()
    for path in files:
        try:
            st = os.stat(path)
            h.update(f"{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
        except OSError:
            pass
    return h.hexdigest()[:16]
