"""What a LaPerm sync hands the ops, worked out once and reused while nothing changed.

A sync of the same parameters every k steps would otherwise rebuild, per parameter and
per sync, the list of permuted parameters, their row views, their sorted initial rows'
local tensors and their names. A :class:`SyncPlan` holds them; :meth:`SyncPlan.fits`
tells whether it still describes the groups: the same parameter objects in the same
groups, the same ``row_dim``\\s, and S unchanged (LaPerm's :class:`SortedInits` counts its
changes). Anything else (a group added, S taken again, a checkpoint loaded, a parameter
swapped in a group's list) makes a new plan.

Rows that cannot be cached are made at each sync: views of parameters whose units are
not on dim 0 (``p.data`` may be replaced between syncs, and a view would keep the old
storage) and DTensor parameters (their rows may need a collective: sharded_rows.py).
Parameters whose units are on dim 0 are passed as they are: the tensor is its own rows.
Meta parameters hold no values: a sync leaves them out (and so does ``check_finite``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import _extension
from ..ops.rank_match import cpu_kernel_keys
from .first_step import has_values
from .layouts import local_tensor
from .param_names import labels
from .sharded_rows import sync_rows

Groups = Sequence[Dict[str, Any]]


def _nothing() -> None:
    pass


class SortedInits(dict):
    """LaPerm's ``{parameter: sorted initial rows}``: a dict that counts its changes, so a
    plan tells in O(1) whether S was taken again since it was made."""

    version = 0  # the class's until the first change (unpickling calls no __init__)

    def _changed(method):  # noqa: N805  (wraps dict's mutating methods)
        def changed(self, *args, **kwargs):
            self.version += 1
            return method(self, *args, **kwargs)

        return changed

    __setitem__ = _changed(dict.__setitem__)
    __delitem__ = _changed(dict.__delitem__)
    pop = _changed(dict.pop)
    popitem = _changed(dict.popitem)
    setdefault = _changed(dict.setdefault)
    update = _changed(dict.update)
    clear = _changed(dict.clear)
    __ior__ = _changed(dict.__ior__)
    del _changed


def _fingerprint(groups: Groups, sorted_inits: SortedInits) -> tuple:
    """What a plan depends on: every group's parameters (by identity) and row_dim, and
    which S (the dict and its version)."""
    return (
        id(sorted_inits),
        sorted_inits.version,
        tuple((tuple(map(id, g["params"])), g.get("row_dim", 0)) for g in groups),
    )


class SyncPlan:
    def __init__(self, groups: Groups, all_groups: Groups, sorted_inits: SortedInits) -> None:
        self._fingerprint = _fingerprint(groups, sorted_inits)
        # the parameters, held: their ids in the fingerprint stay theirs while it lives
        self._held = [p for g in groups for p in g["params"]]
        self.pairs: List[Tuple[torch.Tensor, int]] = [
            (p, g.get("row_dim", 0))
            for g in groups
            for p in g["params"]
            if p in sorted_inits and has_values(p)
        ]
        self.sorted_inits = [local_tensor(sorted_inits[p]) for p, _ in self.pairs]
        names = labels(all_groups)
        self.labels = [names[id(p)] for p, _ in self.pairs]
        # Parameters that are their own rows: plain tensors with units on dim 0.
        self._own_rows = all(
            getattr(p, "placements", None) is None and row_dim % p.dim() == 0
            for p, row_dim in self.pairs
        )
        self._params = [p for p, _ in self.pairs]
        # A plan of CPU parameters that are their own rows holds its call in C++
        # (laperm.SyncCall, csrc/sync_call.h): a sync then enters C++ once, converting
        # no tensor on the way.
        self._native = None
        if (
            self._own_rows
            and self._params
            and _extension.is_loaded()
            and self._params[0].device.type == "cpu"
        ):
            self._native = torch.classes.laperm.SyncCall(self._params, self.sorted_inits)

    def fits(self, groups: Groups, sorted_inits: SortedInits) -> bool:
        return _fingerprint(groups, sorted_inits) == self._fingerprint

    def run_natively(self, backend: str, max_abs: bool) -> Optional[Tuple[list, Any]]:
        """The sync in its one native call, where the ops would send the whole call to the
        C++ kernel at once (laperm::check_call_'s rule): ``(used, max |x| of each tensor
        before it, if asked)``, as the ops report ``used``. None where that does not
        apply, with nothing touched: the caller takes the ops' path."""
        if self._native is None:
            return None
        cpu_keys, cpu_any = cpu_kernel_keys(backend)
        if not cpu_keys and not cpu_any:  # the ops would not run the C++ kernel at once
            return None
        ran, values = self._native.run(cpu_keys, cpu_any, max_abs)
        if not ran:
            return None
        p = self._params[0]
        return [(p.device, p.dtype, "cpu")], values

    def rows(self) -> Tuple[List[torch.Tensor], Callable[[], None]]:
        """The rows to rank-match now and ``write_back`` (sharded_rows.sync_rows)."""
        if self._own_rows:
            return self._params, _nothing
        return sync_rows(self.pairs)

    def local_tensors(self) -> List[torch.Tensor]:
        """Each parameter's local tensor (what check_finite reads)."""
        if self._own_rows:
            return self._params
        return [local_tensor(p, row_dim) for p, row_dim in self.pairs]


class SyncPlans(dict):
    """A LaPerm's cached plans, one per set of groups due at once (few: a full cache is
    emptied)."""

    def plan(self, groups: Groups, all_groups: Groups, sorted_inits: SortedInits) -> SyncPlan:
        """The plan of a sync of ``groups``, made anew when the cached one no longer fits."""
        key = tuple(map(id, groups))
        plan = self.get(key)
        if plan is None or not plan.fits(groups, sorted_inits):
            if len(self) >= 8:
                self.clear()
            plan = self[key] = SyncPlan(groups, all_groups, sorted_inits)
        return plan
