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

Like timm's Lookahead, the wrapper shares the inner optimizer's ``param_groups`` and
``state`` (so LR schedulers, GradScaler and checkpointers work on it) and merges its own
state into the inner one's state dict (laperm_kernels/optim_state.py).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from torch.optim import Optimizer

from . import optim_state
from .finite_check import FiniteCheck
from .layouts import like_param, local_tensor, rows_view
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
        check_finite: warn (once) when a sync meets NaN or inf in the permuted weights,
            a sign of a diverged run; the sync itself proceeds. Costs one fused max-|w|
            reduction per sync and a copy of one value per tensor to the host, which never
            waits for the GPU: on CUDA the warning comes at a later step, once the copy has
            landed, naming the sync (laperm_kernels/finite_check.py).

    A param group may override ``sync_period`` and ``permute`` with keys of those names,
    and say which dimension of its weights indexes output units with ``row_dim`` (default
    0; 1 for ``nn.ConvTransposeNd`` and transformers' ``Conv1D``: see
    ``laperm_kernels.param_groups``, which builds such groups from a model). Group keys
    are saved in the inner optimizer's state_dict, so give callables on the wrapper, not
    in groups, if the checkpoint is to be pickled.

    The sorted initial weights are taken when the wrapper is built (and for groups added
    later, when added): prune or otherwise initialise the weights before wrapping. Call
    :meth:`reset_sorted_init_` after re-initialising weights. ``sorted_inits`` maps each
    permuted parameter to them; ``state`` is the inner optimizer's state.

    ``sync_backends`` maps each ``"device dtype"`` group of the syncs so far to the backend
    that runs it (under ``backend="auto"``, the one its trial chose; see
    ``laperm_kernels.dispatch_report()``).

    With ``torch.amp.GradScaler``, ``scaler.step(opt)`` skips the whole ``opt.step()``
    when gradients overflow: the step counter does not advance and no sync happens.
    """

    def __init__(self, optimizer: Optimizer, sync_period: SyncPeriod = 20, *,
                 permute: PermuteRule = "auto", backend: str = "auto",
                 track_changes: bool = False, check_finite: bool = True) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"LaPerm wraps a torch.optim.Optimizer; got {type(optimizer).__name__}")
        _check_sync_period(sync_period, "sync_period")
        _check_permute(permute, "permute")
        check_backend_name(backend)  # now, not at the first sync k steps later
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups  # shared, as timm's Lookahead does
        self.defaults = optimizer.defaults
        self.state = optimizer.state                # the inner state: LaPerm adds S beside it
        self.sync_period = sync_period
        self.permute = permute
        self.backend = backend
        self.track_changes = bool(track_changes)
        self.check_finite = bool(check_finite)
        self._warned_not_finite = False
        self._finite_check = FiniteCheck()
        self.sorted_inits: Dict[torch.Tensor, torch.Tensor] = {}
        self.last_sync_changes: Dict[int, int] = {}
        self.sync_backends: Dict[str, str] = {}
        self._last_synced: Dict[torch.Tensor, torch.Tensor] = {}
        self._step = 0
        self._init_hooks()
        for group in self.param_groups:
            _check_group(group)
        for group in self.param_groups:
            self._snapshot(group["params"], group)

    def _init_hooks(self) -> None:
        """What Optimizer.__init__ sets up, for hooks and LR schedulers."""
        for name in _HOOKS:
            setattr(self, name, OrderedDict())
        # As Optimizer.__init__ does: makes step hooks registered on the wrapper run.
        self._patch_step_function()

    # --- the algorithm --------------------------------------------------------------------

    @property
    def step_count(self) -> int:
        """Inner steps taken through this wrapper (the counter syncs are scheduled by)."""
        return self._step

    def step(self, closure: Optional[Callable[[], float]] = None):
        self._due(self._step + 1)  # a bad sync_period raises before the inner step
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self._advance()
        return loss

    @torch.compiler.disable
    def _due(self, step: int) -> List[Dict[str, Any]]:
        """The groups that sync after inner step ``step``. Compiled regions call this and
        :meth:`_advance` eagerly: they read and change a Python counter, which would
        otherwise be guarded on (one recompile per step)."""
        return [g for g in self.param_groups if step % self._period(g, step) == 0]

    @torch.compiler.disable
    def _advance(self) -> None:
        self._step += 1
        self._report_not_finite()
        due = self._due(self._step)
        if due:
            self._sync(due)

    @torch.no_grad()
    def sync(self) -> None:
        """Rank-matches every permuted parameter now, whatever the step."""
        self._sync(self.param_groups)

    def _sync(self, groups) -> None:
        pairs = [(p, g) for g in groups for p in g["params"] if p in self.sorted_inits]
        if not pairs:
            return
        self._check_layout(pairs)
        if self.check_finite and not self._warned_not_finite:
            index = {p: i for i, p in enumerate(self._all_params())}
            self._finite_check.start(
                self._step, [local_tensor(p, g.get("row_dim", 0)) for p, g in pairs],
                [f"parameter {index[p]}" for p, _ in pairs])
            self._report_not_finite()  # on the CPU the result is there already
        used = rank_match_groups_([rows_view(p, g.get("row_dim", 0)) for p, g in pairs],
                                  [local_tensor(self.sorted_inits[p]) for p, _ in pairs],
                                  backend=self.backend)
        for device, dtype, name in used:
            self.sync_backends[f"{device} {str(dtype).replace('torch.', '')}"] = name
        if self.track_changes:
            self._trace([p for p, _ in pairs])

    def _check_layout(self, pairs) -> None:
        """Refuses, before anything changes, parameters cast or moved after S was taken
        (``model.half()``, ``model.to(device)``): S no longer fits them."""
        index = {p: i for i, p in enumerate(self._all_params())}
        for p, _ in pairs:
            s = self.sorted_inits[p]
            if s.dtype != p.dtype or s.device != p.device:
                raise ValueError(
                    f"LaPerm: parameter {index[p]} is now {p.dtype} on {p.device}, but its "
                    f"sorted initial rows are {s.dtype} on {s.device}: the model was cast "
                    "or moved after LaPerm was built. Cast or move the model before "
                    "building the optimizer, or call opt.load_state_dict(opt.state_dict()) "
                    "to bring LaPerm's and the inner optimizer's state to the parameters' "
                    "dtype and device")

    def _report_not_finite(self) -> None:
        """Warns once if a finished check found NaN or inf (a diverged run): the sync then
        proceeded as the contract orders (NaN ranks after every number, inf as an ordinary
        value), so those positions received initial values and the weights are finite
        again. Never waits for a check still on its way from the GPU."""
        found = self._finite_check.result()
        if found is None or not found[1] or self._warned_not_finite:
            return
        step, bad = found
        self._warned_not_finite = True
        warnings.warn(
            f"LaPerm: at the sync after step {step}, permuted parameters held NaN or inf "
            f"({', '.join(bad)}): the run may have diverged. The sync went on as the "
            "contract orders (NaN ranks after every number), so those positions now hold "
            "initial values. This warning is given once.", RuntimeWarning, stacklevel=4)

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
        row_dim = group.get("row_dim", 0)
        for p in params:
            if self._wants(p, group):
                if not -p.dim() <= row_dim < p.dim():
                    raise ValueError(f"param group 'row_dim' is {row_dim}, but a permuted "
                                     f"parameter has shape {tuple(p.shape)}")
                self.sorted_inits[p] = like_param(sort_rows(rows_view(p, row_dim)), p, row_dim)
                if self.track_changes:
                    self._last_synced[p] = local_tensor(p, row_dim).detach().clone()
            else:
                self.sorted_inits.pop(p, None)
                self._last_synced.pop(p, None)

    @torch.no_grad()
    def _trace(self, params: List[torch.Tensor]) -> None:
        index = {p: i for i, p in enumerate(self._all_params())}
        for p in params:
            local = local_tensor(p, _row_dim_of(p, self.param_groups))
            last = self._last_synced.get(p)
            changed = local.numel() if last is None else int((local != last).sum())
            self.last_sync_changes[index[p]] = changed
            self._last_synced[p] = local.detach().clone()

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
        """The inner optimizer's state dict in torch.optim's layout, with every permuted
        parameter's sorted initial rows (``"sorted_init"``, beside its inner state), the
        step counter and the parameters' shapes (``"laperm_step"``, ``"laperm_shapes"``,
        in every param group) merged in (laperm_kernels/optim_state.py)."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state_dict = optim_state.pack(self.optimizer.state_dict(), self.param_groups,
                                      self.sorted_inits, self._step)
        for hook in self._optimizer_state_dict_post_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a :meth:`state_dict` (or one of the layout before 0.2). Everything is
        checked before anything changes: a checkpoint that does not fit these parameters
        raises ValueError or TypeError and leaves the optimizer untouched."""
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        inner, step, sorted_inits = optim_state.unpack(state_dict, self.param_groups)
        self.optimizer.load_state_dict(inner)  # checks its own part first
        # Optimizer.load_state_dict rebinds the inner param_groups and state: share them
        # again, or LR schedulers on the wrapper would stop reaching the inner optimizer.
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state
        self.sorted_inits = sorted_inits
        self._last_synced = {}
        if self.track_changes:
            for p in sorted_inits:
                self._last_synced[p] = local_tensor(
                    p, _row_dim_of(p, self.param_groups)).detach().clone()
        self._step = step
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    # deepcopy and pickle: like torch.optim.Optimizer, hooks are not copied (nor a
    # check_finite result still on its way); unlike its __getstate__ (defaults, state and
    # param_groups only), everything else is.
    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()
                if k not in _HOOKS and k != "_finite_check"}  # it may hold a CUDA event

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._finite_check = FiniteCheck()
        self._init_hooks()

    def __repr__(self) -> str:
        return (f"LaPerm(sync_period={self.sync_period!r}, permute={self.permute!r}, "
                f"backend={self.backend!r}, permuted_tensors={len(self.sorted_inits)},\n"
                f"  inner={self.optimizer!r})")


_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
          "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
          "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks")


def _row_dim_of(p: torch.Tensor, groups) -> int:
    return next(g.get("row_dim", 0) for g in groups if any(q is p for q in g["params"]))


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
