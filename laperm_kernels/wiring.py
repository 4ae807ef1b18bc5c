"""A LaPerm-trained network saved as its wiring: which initial value sits where.

After a sync, row r of a permuted tensor W is a permutation of its sorted initial row
S[r] (docs/contract.md), so W is S plus, per row, the index of the value each position
holds: ``W[r, j] == S[r, index[r, j]]``, bit for bit. The indices take the smallest
unsigned dtype that holds the row length (uint8 up to 256 columns, then uint16, uint32,
uint64), a quarter of float32's bytes or less; S can be kept beside them or rebuilt
(``lk.sort_rows`` of the initial weights, remade from their seed, or a LaPerm optimizer).

    w = lk.wiring(model, opt)                    # opt: the LaPerm optimizer (or {name: S})
    torch.save(w, "wiring.pt")
    lk.rewire_(model, torch.load("wiring.pt"))   # the weights again, bit for bit

Indices are matched on bit patterns, stable in column order, so rows with equal values,
-0.0 beside +0.0, or NaNs of different payloads are rebuilt bit-identically.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Union

import torch
from torch import nn

from .ops import sort_rows

FORMAT = "laperm_kernels.wiring"
VERSION = 1
INDEX_DTYPES = (torch.uint8, torch.uint16, torch.uint32, torch.uint64)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

SortedInits = Union[None, Mapping[str, torch.Tensor], torch.optim.Optimizer]


def index_dtype(row_length: int) -> torch.dtype:
    """The smallest unsigned dtype holding the indices 0 .. row_length - 1."""
    for dtype in INDEX_DTYPES:
        if row_length - 1 <= torch.iinfo(dtype).max:
            return dtype
    raise ValueError(f"row length {row_length} exceeds uint64")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as its rows (contract.md: ``reshape(shape[0], -1)``; a 1-D tensor is one row)."""
    return t.reshape(1, -1) if t.dim() == 1 else t.reshape(t.shape[0], -1)


def _bit_keys(rows: torch.Tensor) -> torch.Tensor:
    """Each element's bit pattern as an int64: equal keys exactly when bits are equal."""
    size = rows.element_size()
    if size not in _BITS or rows.is_complex():
        raise TypeError(f"wiring: unsupported dtype {rows.dtype}")
    return rows.contiguous().view(_BITS[size]).to(torch.int64)


def _named_sorted_inits(model: nn.Module, sorted_inits: SortedInits, arg: str):
    """``{name: S}`` from a mapping, a LaPerm optimizer (its S of the model's parameters)
    or None."""
    if sorted_inits is None:
        return None
    if isinstance(sorted_inits, torch.optim.Optimizer):
        by_param = getattr(sorted_inits, "sorted_inits", None)
        if by_param is None:
            raise TypeError(f"{arg}: a LaPerm optimizer or a {{name: S}} mapping expected")
        for group in sorted_inits.param_groups:
            if group.get("row_dim", 0) != 0 and any(p in by_param for p in group["params"]):
                raise ValueError(f"{arg}: groups with row_dim != 0 are not supported")
        return {n: by_param[p] for n, p in model.named_parameters() if p in by_param}
    if not isinstance(sorted_inits, Mapping):
        raise TypeError(
            f"{arg} must be a LaPerm optimizer or a {{name: S}} mapping, "
            f"got {type(sorted_inits).__name__}"
        )
    return dict(sorted_inits)


def _check_sorted(label: str, p: torch.Tensor, s) -> torch.Tensor:
    """S for ``p`` as rows on its device, or the error naming ``label``."""
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{label} must be a tensor, got {type(s).__name__}")
    if s.dtype != p.dtype or s.numel() != p.numel() or _rows(s).shape != _rows(p).shape:
        raise ValueError(
            f"{label} is {_dtype_name(s.dtype)} {tuple(s.shape)}; the parameter is "
            f"{_dtype_name(p.dtype)} {tuple(p.shape)}"
        )
    return _rows(s.detach()).to(p.device)


@torch.no_grad()
def wiring(
    model: nn.Module,
    sorted_inits: SortedInits = None,
    *,
    names: Optional[Iterable[str]] = None,
    include_sorted: bool = True,
) -> Dict:
    """The wiring of ``model``'s permuted tensors: ``{"format", "version", "tensors":
    {name: {"shape", "dtype", "index"[, "sorted"]}}}``, ready for ``torch.save``.

    Args:
        model: the trained model, synced (``opt.sync()`` after the last step), so that
            each permuted row is a permutation of its sorted initial row.
        sorted_inits: S per tensor: a LaPerm optimizer (its tensors are the ones exported),
            a ``{name: S}`` mapping, or None (S is then each row of the weights sorted,
            which it is for a synced tensor).
        names: the tensors to export (default: those of ``sorted_inits``, else every
            parameter with ndim >= 2).
        include_sorted: keep S in the wiring (else give it to :func:`rewire_`).

    Raises ValueError, naming the tensor and row, where a row is not a permutation of S.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    given = _named_sorted_inits(model, sorted_inits, "sorted_inits")
    if names is None:
        names = list(given) if given is not None else [n for n, p in params.items() if p.dim() >= 2]
    else:
        names = list(names)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"names: {unknown} are not parameters of model")
    tensors = {}
    for name in names:
        p = params[name].detach()
        if given is not None and name not in given:
            raise ValueError(f"sorted_inits has no S for {name!r}")
        if given is not None:
            s = _check_sorted(f"sorted_inits[{name!r}]", p, given[name])
        else:
            s = _rows(sort_rows(p))
        w = _rows(p)
        tensors[name] = _wire(name, w, s, p, include_sorted)
    return {"format": FORMAT, "version": VERSION, "tensors": tensors}


def _wire(name: str, w: torch.Tensor, s: torch.Tensor, p: torch.Tensor, include_sorted: bool):
    keys_w, keys_s = _bit_keys(w), _bit_keys(s)
    order_w = keys_w.sort(dim=1, stable=True).indices
    order_s = keys_s.sort(dim=1, stable=True).indices
    differs = (keys_w.gather(1, order_w) != keys_s.gather(1, order_s)).any(dim=1)
    if bool(differs.any()):
        row = int(differs.nonzero()[0])
        raise ValueError(
            f"wiring: row {row} of {name!r} is not a permutation of its sorted initial row "
            "(sync after the last step: opt.sync(); or pass that tensor's S)"
        )
    index = torch.empty_like(order_w).scatter_(1, order_w, order_s)
    entry = {
        "shape": tuple(p.shape),
        "dtype": _dtype_name(p.dtype),
        "index": index.to(index_dtype(w.shape[1])).cpu(),
    }
    if include_sorted:
        entry["sorted"] = s.clone().cpu()
    return entry


@torch.no_grad()
def rewire_(model: nn.Module, wiring: Dict, sorted_inits: SortedInits = None) -> nn.Module:
    """Sets each tensor of ``wiring`` in ``model`` to ``S[r, index[r, j]]``, bit for bit;
    returns ``model``. S comes from the wiring or, where it has none, ``sorted_inits`` (a
    LaPerm optimizer or a ``{name: S}`` mapping). Everything is checked before any weight
    changes: a wiring of another model, a shape or dtype mismatch, an index out of range
    or repeated within a row raise ValueError (TypeError for wrong types), naming the
    tensor."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(wiring, Mapping) or wiring.get("format") != FORMAT:
        raise TypeError(f"wiring must be a dict made by lk.wiring (format {FORMAT!r})")
    if wiring.get("version") != VERSION:
        raise ValueError(f"wiring: version {wiring.get('version')!r}; this reads {VERSION}")
    params = dict(model.named_parameters())
    given = _named_sorted_inits(model, sorted_inits, "sorted_inits")
    plan = [_checked(name, entry, params, given) for name, entry in wiring["tensors"].items()]
    for p, s, index in plan:
        # gathered as bit patterns: a bfloat16 gather on the CPU rewrites NaN payloads
        bit_dtype = _BITS[s.element_size()]
        p.copy_(s.contiguous().view(bit_dtype).gather(1, index).view(p.dtype).view(p.shape))
    return model


def _checked(name: str, entry, params, given):
    """(parameter, S rows, int64 index on its device), or the error naming ``name``."""
    where = f"wiring['tensors'][{name!r}]"
    if name not in params:
        raise ValueError(f"{where}: model has no parameter {name!r} (a wiring of another model?)")
    p = params[name]
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where} must be a dict made by lk.wiring")
    shape, dtype = tuple(entry.get("shape", ())), entry.get("dtype")
    if shape != tuple(p.shape) or dtype != _dtype_name(p.dtype):
        raise ValueError(
            f"{where} is {dtype} {shape}; the parameter is {_dtype_name(p.dtype)} {tuple(p.shape)}"
        )
    rows, n = _rows(p).shape
    index = entry.get("index")
    if not isinstance(index, torch.Tensor) or index.dtype not in INDEX_DTYPES:
        raise TypeError(f"{where}['index'] must be an unsigned integer tensor")
    if tuple(index.shape) != (rows, n):
        raise ValueError(f"{where}['index'] is {tuple(index.shape)}; expected {(rows, n)}")
    index = index.to(torch.int64)
    if n and int(index.max()) >= n:
        r = int((index >= n).any(dim=1).nonzero()[0])
        raise ValueError(f"{where}['index'] row {r} holds {int(index[r].max())} >= {n}")
    repeated = (index.sort(dim=1).values != torch.arange(n)).any(dim=1)
    if bool(repeated.any()):
        raise ValueError(
            f"{where}['index'] row {int(repeated.nonzero()[0])} repeats an index: not a permutation"
        )
    if "sorted" in entry:
        s = _check_sorted(f"{where}['sorted']", p, entry["sorted"])
    elif given is not None and name in given:
        s = _check_sorted(f"sorted_inits[{name!r}]", p, given[name])
    else:
        raise ValueError(f"{where} has no 'sorted' and sorted_inits gives no S for it")
    return p, s, index.to(p.device)
