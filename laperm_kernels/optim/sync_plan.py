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

from typing import Any, Dict, List, Sequence, Tuple

import torch

from ..ops.prepared_call import PreparedCall
from ..ops.rank_match import CallResult
from .first_step import has_values
from .layouts import local_tensor
from .param_names import labels
from .sharded_rows import sync_rows

Groups = Sequence[Dict[str, Any]]


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
        self.params = [p for p, _ in self.pairs]
        # Parameters that are their own rows make one call, prepared once (on the CPU its
        # lists are held in C++: prepared_call.py); the others' rows are made at each sync.
        self._call = PreparedCall(self.params, self.sorted_inits) if self._own_rows else None

    def fits(self, groups: Groups, sorted_inits: SortedInits) -> bool:
        return _fingerprint(groups, sorted_inits) == self._fingerprint

    def run(self, backend: str, max_abs: bool) -> CallResult:
        """The sync: every parameter's rows rank-matched in one call of the ops (their rows
        redistributed and written back where they must be: sharded_rows.sync_rows)."""
        if self._call is not None:
            return self._call.run(backend, max_abs)
        rows, write_back = sync_rows(self.pairs)
        result = PreparedCall(rows, self.sorted_inits).run(backend, max_abs)
        write_back()  # rows that were redistributed go back into their parameters
        return result


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
