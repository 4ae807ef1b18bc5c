"""LaPerm: a drop-in wrapper that turns any torch.optim optimizer into Lookahead Permutation.

    inner = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt = LaPerm(inner, sync_period=20)
    for x, y in data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()        # the inner step, then a sync on every sync_period-th step

A sync rank-matches every permuted parameter to its sorted initial rows (one
``rank_match_many_`` call for the whole model), so each row of a weight holds exactly its
initial values, ordered the way the trained weights are ranked. The inner optimizer's
state (e.g. Adam moments) is kept across syncs, as in the paper's official code.

Like timm's Lookahead, the wrapper shares the inner optimizer's ``param_groups`` (so LR
schedulers and GradScaler work on it) and keeps its own state beside the inner one.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from torch.optim import Optimizer

from .ops import check_backend_name, rank_match_groups_, sort_rows

SyncPeriod = Union[int, Callable[[int], int]]
PermuteRule = Union[str, bool, Callable[[torch.Tensor], bool]]


class LaPerm(Optimizer):
    """Lookahead Permutation (Qiu & Suda, NeurIPS 2020) around ``optimizer``.

    Args:
        optimizer: any ``torch.optim.Optimizer``; its parameters are the ones trained.
        sync_period: k, the number of steps between syncs: an int >= 1 or a callable
            ``step -> k`` (the paper schedules k by epoch). A sync runs after the inner
            step whenever ``step % k == 0`` (steps count from 1).
        permute: which parameters are permuted: ``"auto"`` (ndim >= 2: Linear and Conv
            weights; biases and normalisation parameters are skipped, as in the paper),
            ``True`` / ``False`` (all / none), or a predicate ``param -> bool``.
        backend: the rank-matching backend (see ``laperm_kernels.available_backends``).
        track_changes: after each sync, record in ``last_sync_changes`` how many positions
            of each permuted tensor changed value since the previous sync (the paper's
            permutation tracer). Costs one extra copy of the permuted weights.

    ``sync_backends`` maps each ``"device dtype"`` group of the syncs so far to the backend
    that runs it (under ``backend="auto"``, the one its trial chose; see
    ``laperm_kernels.dispatch_report()``).

    A param group may override ``sync_period`` and ``permute`` with keys of those names
    (give them in the group dicts of the inner optimizer or of ``add_param_group``). Such
    keys are saved in the inner optimizer's state_dict, so give callables on the wrapper,
    not in groups, if the checkpoint is to be pickled.

    The sorted initial weights are taken when the wrapper is built (and for groups added
    later, when added): prune or otherwise initialise the weights before wrapping. Call
    :meth:`reset_sorted_init_` after re-initialising weights.

    With ``torch.amp.GradScaler``, ``scaler.step(opt)`` skips the whole ``opt.step()``
    when gradients overflow: the step counter does not advance and no sync happens.
    """

    def __init__(self, optimizer: Optimizer, sync_period: SyncPeriod = 20, *,
                 permute: PermuteRule = "auto", backend: str = "auto",
                 track_changes: bool = False) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"LaPerm wraps a torch.optim.Optimizer; got {type(optimizer).__name__}")
        _check_sync_period(sync_period, "sync_period")
        _check_permute(permute, "permute")
        check_backend_name(backend)  # now, not at the first sync k steps later
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups  # shared, as timm's Lookahead does
        self.defaults = optimizer.defaults
        self.sync_period = sync_period
        self.permute = permute
        self.backend = backend
        self.track_changes = bool(track_changes)
        self.state: Dict[torch.Tensor, Dict[str, Any]] = defaultdict(dict)
        self.last_sync_changes: Dict[int, int] = {}
        self.sync_backends: Dict[str, str] = {}
        self._step = 0
        # What Optimizer.__init__ would set up, for hooks and LR schedulers.
        self._optimizer_step_pre_hooks: Dict[int, Callable] = OrderedDict()
        self._optimizer_step_post_hooks: Dict[int, Callable] = OrderedDict()
        self._optimizer_state_dict_pre_hooks: Dict[int, Callable] = OrderedDict()
        self._optimizer_state_dict_post_hooks: Dict[int, Callable] = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: Dict[int, Callable] = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: Dict[int, Callable] = OrderedDict()
        # As Optimizer.__init__ does: makes step hooks registered on the wrapper run.
        self._patch_step_function()
        for group in self.param_groups:
            _check_group(group)
        for group in self.param_groups:
            self._snapshot(group["params"], group)

    # --- the algorithm --------------------------------------------------------------------

    @property
    def step_count(self) -> int:
        """Inner steps taken through this wrapper (the counter syncs are scheduled by)."""
        return self._step

    def step(self, closure: Optional[Callable[[], float]] = None):
        upcoming = self._step + 1
        # Which groups sync is decided first, so a bad sync_period raises before the
        # inner step changes anything.
        due = [g for g in self.param_groups if upcoming % self._period(g, upcoming) == 0]
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self._step = upcoming
        if due:
            self._sync(due)
        return loss

    @torch.no_grad()
    def sync(self) -> None:
        """Rank-matches every permuted parameter now, whatever the step."""
        self._sync(self.param_groups)

    def _sync(self, groups) -> None:
        params = [p for g in groups for p in g["params"]
                  if "sorted_init" in self.state.get(p, {})]
        if not params:
            return
        used = rank_match_groups_([_local(p) for p in params],
                                  [self.state[p]["sorted_init"] for p in params],
                                  backend=self.backend)
        for device, dtype, name in used:
            self.sync_backends[f"{device} {str(dtype).replace('torch.', '')}"] = name
        if self.track_changes:
            self._trace(params)

    def _period(self, group, step: int) -> int:
        period = group.get("sync_period", self.sync_period)
        k = period(step) if callable(period) else period
        if not _is_period(k):
            raise ValueError(f"sync_period must give an int >= 1; got {k!r} at step {step}")
        return k

    def _wants(self, p: torch.Tensor, group) -> bool:
        rule = group.get("permute", self.permute)
        if callable(rule):
            return bool(rule(p))
        if rule == "auto":
            return p.dim() >= 2
        return bool(rule) and p.dim() >= 1

    @torch.no_grad()
    def _snapshot(self, params: Iterable[torch.Tensor], group) -> None:
        for p in params:
            if self._wants(p, group):
                self.state[p]["sorted_init"] = sort_rows(_local(p))
                if self.track_changes:
                    self.state[p]["last_synced"] = _local(p).detach().clone()
            else:
                self.state.pop(p, None)

    @torch.no_grad()
    def _trace(self, params: List[torch.Tensor]) -> None:
        index = {id(p): i for i, p in enumerate(self._all_params())}
        for p in params:
            local = _local(p)
            last = self.state[p].get("last_synced")
            changed = local.numel() if last is None else int((local != last).sum())
            self.last_sync_changes[index[id(p)]] = changed
            self.state[p]["last_synced"] = local.detach().clone()

    def reset_sorted_init_(self, params: Optional[Iterable[torch.Tensor]] = None) -> None:
        """Takes the sorted initial rows again, from the parameters' current values (all
        parameters, or those given), e.g. after re-initialising or pruning the weights."""
        wanted = None if params is None else {id(p) for p in params}
        for group in self.param_groups:
            self._snapshot([p for p in group["params"] if wanted is None or id(p) in wanted],
                           group)

    # --- torch.optim.Optimizer plumbing ---------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        _check_group(param_group)
        self.optimizer.add_param_group(param_group)
        self._snapshot(self.param_groups[-1]["params"], self.param_groups[-1])

    def _all_params(self) -> List[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> Dict[str, Any]:
        """The inner optimizer's state dict, plus LaPerm's step counter, the sorted initial
        rows (keyed by parameter index, as torch optimizers key their state) and every
        parameter's shape (so a checkpoint of another model is refused on load)."""
        params = self._all_params()
        sorted_inits = {i: self.state[p]["sorted_init"] for i, p in enumerate(params)
                        if "sorted_init" in self.state.get(p, {})}
        return {"inner": self.optimizer.state_dict(),
                "laperm": {"step": self._step, "sorted_inits": sorted_inits,
                           "param_shapes": [tuple(_local(p).shape) for p in params]}}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a :meth:`state_dict`. Everything is checked before anything changes:
        a checkpoint of another model raises ValueError and leaves this one untouched."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"inner", "laperm"}:
            raise ValueError("LaPerm.load_state_dict expects a dict from LaPerm.state_dict() "
                             "with keys 'inner' and 'laperm'")
        laperm = state_dict["laperm"]
        # Everything of ours is checked before the inner optimizer's state changes.
        if (not isinstance(laperm, dict)
                or set(laperm) != {"step", "sorted_inits", "param_shapes"}
                or not isinstance(laperm["sorted_inits"], dict)):
            raise ValueError("LaPerm.load_state_dict: state_dict['laperm'] must be a dict with "
                             "keys 'step', 'sorted_inits' and 'param_shapes' (from "
                             "LaPerm.state_dict())")
        step = laperm["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"LaPerm.load_state_dict: step must be an int >= 0; got {step!r}")
        params = self._all_params()
        shapes = [tuple(_local(p).shape) for p in params]
        saved = [tuple(s) for s in laperm["param_shapes"]]
        if saved != shapes:
            diff = next((i for i, (a, b) in enumerate(zip(saved, shapes)) if a != b), None)
            raise ValueError(
                f"checkpoint is of {len(saved)} parameters, this optimizer has {len(shapes)}"
                if diff is None else f"checkpoint's parameter {diff} has shape {saved[diff]} "
                f"but this optimizer's has {shapes[diff]}")
        restored = {}
        for i, s in laperm["sorted_inits"].items():
            if not 0 <= int(i) < len(params):
                raise ValueError(f"checkpoint has sorted_inits for parameter {i}, but the "
                                 f"optimizer has {len(params)} parameters")
            local = _local(params[int(i)])
            if tuple(s.shape) != tuple(local.shape):
                raise ValueError(f"checkpoint's sorted_inits[{i}] has shape {tuple(s.shape)} "
                                 f"but parameter {i} has {tuple(local.shape)}")
            restored[params[int(i)]] = s.to(device=local.device, dtype=local.dtype)
        self.optimizer.load_state_dict(state_dict["inner"])  # checks its own part first
        # Optimizer.load_state_dict rebinds the inner param_groups to a new list: share it
        # again, or LR schedulers on the wrapper would stop reaching the inner optimizer.
        self.param_groups = self.optimizer.param_groups
        for p in params:
            self.state.pop(p, None)
        for p, s in restored.items():
            self.state[p]["sorted_init"] = s.contiguous()
            if self.track_changes:
                self.state[p]["last_synced"] = _local(p).detach().clone()
        self._step = step

    def __repr__(self) -> str:
        permuted = sum(1 for p in self._all_params() if "sorted_init" in self.state.get(p, {}))
        return (f"LaPerm(sync_period={self.sync_period!r}, permute={self.permute!r}, "
                f"backend={self.backend!r}, permuted_tensors={permuted},\n"
                f"  inner={self.optimizer!r})")


def _local(p: torch.Tensor) -> torch.Tensor:
    """The rows a rank sees. A DTensor sharded on dim 0 (FSDP2's layout) or replicated
    holds whole rows: permute the local tensor, no communication needed. Any other
    placement would split rows across ranks, and is refused."""
    placements = getattr(p, "placements", None)
    if placements is None:
        return p
    for placement in placements:
        if not (placement.is_replicate() or (placement.is_shard() and placement.dim == 0)):
            raise ValueError(f"LaPerm permutes whole rows; a DTensor parameter placed as "
                             f"{tuple(placements)} splits them across ranks (only Shard(0) "
                             "and Replicate() keep rows whole)")
    return p.to_local()


def _is_period(k) -> bool:
    return isinstance(k, int) and not isinstance(k, bool) and k >= 1


def _check_sync_period(value, name: str) -> None:
    if not (callable(value) or _is_period(value)):
        raise ValueError(f"{name} must be an int >= 1 or a callable step -> k; got {value!r}")


def _check_permute(value, name: str) -> None:
    if callable(value) or isinstance(value, bool) or value == "auto":
        return
    raise ValueError(f"{name} must be 'auto', True, False or a callable param -> bool; "
                     f"got {value!r}")


def _check_group(group: Dict[str, Any]) -> None:
    if "sync_period" in group:
        _check_sync_period(group["sync_period"], "param group 'sync_period'")
    if "permute" in group:
        _check_permute(group["permute"], "param group 'permute'")
