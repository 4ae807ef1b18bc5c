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
state into the inner one's state dict (laperm_kernels/optim/state_dict.py).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from torch.optim import Optimizer

from ..ops import graph_capture
from ..ops.rank_match import _byte_span, check_backend_name, rank_match_groups_eagerly, sort_rows
from . import first_step, step_hooks
from . import state_dict as optim_state
from .finite_check import FiniteCheck
from .layouts import check_placements, like_param, local_tensor
from .param_names import label, label_of, labels
from .sharded_rows import whole_rows
from .sync_plan import SortedInits, SyncPlan

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
            permutation tracer). Costs one extra copy of the permuted weights; the counts
            stay on the device until ``last_sync_changes`` is read.
        check_finite: warn (once) when a sync meets NaN or inf in the permuted weights,
            a sign of a diverged run; the sync itself proceeds. Costs one fused max-|w|
            reduction per sync and a copy of one value per tensor to the host, which never
            waits for the GPU: on CUDA the warning comes at a later step, once the copy has
            landed, naming the sync (laperm_kernels/optim/finite_check.py).
        check_ranks: at the first step, when torch.distributed is initialised, compare
            the permuted plain-tensor weights across the ranks of the default process
            group (True), of a given ``ProcessGroup``, or not at all (False: for ranks
            that hold different models, such as pipeline stages). One
            ``all_gather_object`` of a fingerprint per weight (laperm_kernels/optim/first_step.py).

    A param group may override ``sync_period`` and ``permute`` with keys of those names,
    and say which dimension of its weights indexes output units with ``row_dim`` (default
    0; 1 for ``nn.ConvTransposeNd`` and transformers' ``Conv1D``: see
    ``laperm_kernels.param_groups``, which builds such groups from a model). Group keys
    are saved in the inner optimizer's state_dict, so give callables on the wrapper, not
    in groups, if the checkpoint is to be pickled.

    The sorted initial weights are taken when the wrapper is built (and for groups added
    later, when added): prune or otherwise initialise the weights before wrapping, and
    build it after ``DDP(model)``. A permuted weight changed in place before the first
    step all the same (DDP's broadcast, a re-initialisation) is noticed at the first step,
    before the inner step: S is taken again from it, with a warning naming it. Ranks whose
    weights differ at the first step get a ValueError (``check_ranks``). Call
    :meth:`reset_sorted_init_` after re-initialising weights later. ``sorted_inits`` maps
    each permuted parameter to them; ``state`` is the inner optimizer's state.

    DTensor parameters may have any placements: where they split rows across ranks
    (tensor parallelism, FSDP2 over ``row_dim=1`` weights), a sync moves the rows whole
    with ``DTensor.redistribute`` and back (docs/distributed.md).

    A permuted parameter listed twice in a group is refused, as are permuted parameters
    sharing memory. Errors name parameters by their ``"param_names"`` in the group (see
    ``laperm_kernels.param_groups``), else by group and index.

    ``sync_backends`` maps each ``"device dtype"`` group of the syncs so far to the backend
    that runs it (under ``backend="auto"``, the one its trial chose; see
    ``laperm_kernels.dispatch_report()``).

    With ``torch.amp.GradScaler``, ``scaler.step(opt)`` skips the whole ``opt.step()``
    when gradients overflow: the step counter does not advance and no sync happens.

    Step hooks on the wrapper and torch.optim's global ones run once per step, around
    the inner step and the sync; the inner optimizer's own run around its step
    (laperm_kernels/optim/step_hooks.py).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        sync_period: SyncPeriod = 20,
        *,
        permute: PermuteRule = "auto",
        backend: str = "auto",
        track_changes: bool = False,
        check_finite: bool = True,
        check_ranks: Any = True,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"LaPerm wraps a torch.optim.Optimizer; got {type(optimizer).__name__}")
        _check_sync_period(sync_period, "sync_period")
        _check_permute(permute, "permute")
        _check_ranks_arg(check_ranks)
        check_backend_name(backend)  # now, not at the first sync k steps later
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups  # shared, as timm's Lookahead does
        self.defaults = optimizer.defaults
        self.state = optimizer.state  # the inner state: LaPerm adds S beside it
        self.sync_period = sync_period
        self.permute = permute
        self.backend = backend
        self.track_changes = bool(track_changes)
        self.check_finite = bool(check_finite)
        self.check_ranks = check_ranks
        self._warned_not_finite = False
        # permuted parameter -> fingerprint of its weights when S was taken, until the
        # first step compares it (laperm_kernels/optim/first_step.py)
        self._pending: Dict[torch.Tensor, torch.Tensor] = {}
        self._finite_check = FiniteCheck()
        self._sync_plans: Dict[tuple, SyncPlan] = {}
        self._last_used: list = []
        self.sorted_inits: Dict[torch.Tensor, torch.Tensor] = SortedInits()
        self._changes: Dict[int, torch.Tensor] = {}  # last_sync_changes, on the device
        self.sync_backends: Dict[str, str] = {}
        self._last_synced: Dict[torch.Tensor, torch.Tensor] = {}
        self._step = 0
        self._init_hooks()
        wanted = self._wanted(self.param_groups)  # the permute rule, asked once a parameter
        for i, group in enumerate(self.param_groups):
            _check_group(group, i, self.param_groups, wanted)
            self._check_params(group, i, self.param_groups, wanted)
        self._check_no_overlap(self.param_groups, wanted)
        for group in self.param_groups:
            self._snapshot(group["params"], group, wanted)

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
        self._before_inner_step()
        held = step_hooks.hold_back()  # the global step hooks run once, around this step
        try:
            loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        finally:
            step_hooks.put_back(held)
        self._advance()
        return loss

    # Compiled regions run _before_inner_step, _advance and sync eagerly: they read and
    # change a Python counter, which would otherwise be guarded on (one recompile per
    # step). What they call runs eagerly too, with no torch.compiler.disable of its own.

    @torch.compiler.disable
    def _before_inner_step(self) -> None:
        if self._pending:
            self._check_first_step()
        self._due(self._step + 1)  # a bad sync_period raises before the inner step

    @torch.compiler.disable
    def _advance(self) -> None:
        self._step += 1
        self._report_not_finite()
        due = self._due(self._step)
        if due:
            self._sync(due)

    @torch.compiler.disable
    def sync(self) -> None:
        """Rank-matches every permuted parameter now, whatever the step."""
        if self._pending:
            self._check_first_step()
        self._sync(self.param_groups)

    def _due(self, step: int) -> List[Dict[str, Any]]:
        """The groups that sync after inner step ``step``."""
        return [g for g in self.param_groups if step % self._period(g, step) == 0]

    @torch.no_grad()
    def _check_first_step(self) -> None:
        """Before the first step (or sync) writes anything: takes S again for permuted
        weights changed in place since it was taken, and compares the ranks' weights
        (laperm_kernels/optim/first_step.py). Called while ``self._pending`` holds them."""
        if graph_capture.capturing_any(self._pending):
            return  # it reads values back: left for the next eager step (docs/capture.md)
        params = [p for p in self._all_params() if p in self._pending]
        now = [int(first_step.fingerprint(local_tensor(p))) for p in params]
        changed = [p for p, f in zip(params, now) if f != int(self._pending[p])]
        names = labels(self.param_groups)
        retake = bool(changed)
        group = self._rank_group()
        if group is not None:
            plain = [(p, f) for p, f in zip(params, now) if getattr(p, "placements", None) is None]
            gathered = first_step.exchange(group, retake, [f for _, f in plain])
            why = first_step.first_disagreement(gathered, [names[id(p)] for p, _ in plain])
            if why is not None:
                raise ValueError(
                    f"LaPerm: at the first step, {why}: the ranks would permute different "
                    "initial values and diverge. Give every rank the same weights before "
                    "LaPerm's first step (the same seed, or DDP(model), which broadcasts "
                    "rank 0's weights); if the ranks hold different models on purpose "
                    "(pipeline stages), pass check_ranks=False"
                )
            retake = any(c for c, _ in gathered)
        if changed:
            shown = ", ".join(names[id(p)] for p in changed[:4])
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            warnings.warn(
                f"LaPerm: {shown}{more} changed in place after LaPerm was built and before "
                "its first step (DDP's broadcast of rank 0's weights, a re-initialisation, "
                "weights loaded into the model or cast): their sorted initial rows are taken again "
                "now, from the current weights. Build LaPerm after DDP(model) and after "
                "initialising, or call reset_sorted_init_() after changing the weights.",
                UserWarning,
                stacklevel=4,
            )
        if retake:  # on every rank alike: a DTensor's S may take a collective
            for g in self.param_groups:
                self._snapshot([p for p in g["params"] if p in self._pending], g)
        self._pending = {}

    def _rank_group(self):
        """The process group the first-step check compares ranks over, or None."""
        if self.check_ranks is False:
            return None
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = dist.group.WORLD if self.check_ranks is True else self.check_ranks
        return group if dist.get_world_size(group) > 1 else None

    @torch.no_grad()
    def _sync(self, groups) -> None:
        plan = self._sync_plan(groups)
        if not plan.pairs:
            return
        check = self.check_finite and not self._warned_not_finite
        try:
            done = plan.run_natively(self.backend, check)  # CPU models: one native call
            if done is None:
                if check:
                    self._finite_check.start(self._step, plan.local_tensors(), plan.labels)
                rows, write_back = plan.rows()
                used = rank_match_groups_eagerly(rows, plan.sorted_inits, self.backend)
                write_back()  # rows that were redistributed go back into their parameters
            else:
                used, max_abs = done
                if check:
                    self._finite_check.record(self._step, max_abs, plan.labels)
        except (TypeError, ValueError):
            self._check_layout(plan.pairs)  # a cast or moved model: say so, not the ops
            raise
        if check:
            self._report_not_finite()  # on the CPU the result is there already
        if used != self._last_used:
            self._last_used = used
            for device, dtype, name in used:
                self.sync_backends[f"{device} {str(dtype).replace('torch.', '')}"] = name
        if self.track_changes:
            self._trace([p for p, _ in plan.pairs])

    def _sync_plan(self, groups) -> SyncPlan:
        """The cached plan of a sync of ``groups`` (sync_plan.py), made anew when it no
        longer fits them."""
        key = tuple(map(id, groups))
        plan = self._sync_plans.get(key)
        if plan is None or not plan.fits(groups, self.sorted_inits):
            if len(self._sync_plans) >= 8:  # subsets of groups due at once: few
                self._sync_plans.clear()
            plan = self._sync_plans[key] = SyncPlan(groups, self.param_groups, self.sorted_inits)
        return plan

    def _check_layout(self, pairs) -> None:
        """Refuses, before anything changes, parameters cast or moved after S was taken
        (``model.half()``, ``model.to(device)``): S no longer fits them."""
        for p, _ in pairs:
            s = self.sorted_inits[p]
            if s.dtype != p.dtype or s.device != p.device:
                raise ValueError(
                    f"LaPerm: {label_of(self.param_groups, p)} is now {p.dtype} on "
                    f"{p.device}, but its "
                    f"sorted initial rows are {s.dtype} on {s.device}: the model was cast "
                    "or moved after LaPerm was built. Cast or move the model before "
                    "building the optimizer, or call opt.load_state_dict(opt.state_dict()) "
                    "to bring LaPerm's and the inner optimizer's state to the parameters' "
                    "dtype and device"
                )

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
            "initial values. This warning is given once.",
            RuntimeWarning,
            stacklevel=4,
        )

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

    def _wanted(self, groups) -> Dict[int, bool]:
        """``{id(tensor): whether it is permuted}`` for the tensors of ``groups``."""
        return {
            id(p): self._wants(p, g)
            for g in groups
            for p in _tensors(g["params"])
            if isinstance(p, torch.Tensor)
        }

    def _check_params(self, group, index: int, groups, wanted) -> None:
        """Refuses, before anything changes, permuted parameters that ``row_dim`` does not
        fit or that are DTensors placed other than sharded or replicated."""
        row_dim = group.get("row_dim", 0)
        for j, p in enumerate(_tensors(group["params"])):
            if wanted.get(id(p)):
                if not -p.dim() <= row_dim < p.dim():
                    raise ValueError(
                        f"param group 'row_dim' is {row_dim}, but "
                        f"{label(groups, index, j)} has shape {tuple(p.shape)}"
                    )
                check_placements(p, label(groups, index, j))

    def _check_no_overlap(self, groups, wanted) -> None:
        """Refuses permuted parameters whose memory overlaps another's (a sync would
        permute it twice), naming both."""
        spans = []
        for gi, g in enumerate(groups):
            for j, p in enumerate(_tensors(g["params"])):
                if wanted.get(id(p)):
                    t = local_tensor(p)
                    if t.numel() and t.device.type != "meta":
                        spans.append((*_byte_span(t), label(groups, gi, j)))
        spans.sort()
        for k, (storage, _, end, name) in enumerate(spans):
            for storage2, start2, _, name2 in spans[k + 1 :]:
                if storage2 != storage or start2 >= end:
                    break
                raise ValueError(
                    f"LaPerm: {name} and {name2} share memory; permuted "
                    "parameters must be distinct tensors"
                )

    @torch.no_grad()
    def _snapshot(
        self, params: Iterable[torch.Tensor], group, wanted: Optional[Dict[int, bool]] = None
    ) -> None:
        row_dim = group.get("row_dim", 0)
        for p in params:
            if wanted[id(p)] if wanted is not None else self._wants(p, group):
                self.sorted_inits[p] = like_param(sort_rows(whole_rows(p, row_dim)), p, row_dim)
                if first_step.has_values(p):
                    self._pending[p] = first_step.fingerprint(local_tensor(p))
                if self.track_changes:
                    self._last_synced[p] = local_tensor(p, row_dim).detach().clone()
            else:
                self.sorted_inits.pop(p, None)
                self._last_synced.pop(p, None)
                self._pending.pop(p, None)

    @torch.no_grad()
    def _trace(self, params: List[torch.Tensor]) -> None:
        """``track_changes``: counts, on the device, the positions of each tensor whose
        value changed since its last sync, and keeps its values for the next count, in
        buffers kept from one sync to the next: kernels only, no host read, so a captured
        step replays it (docs/capture.md)."""
        index = {p: i for i, p in enumerate(self._all_params())}
        for p in params:
            local = local_tensor(p, _row_dim_of(p, self.param_groups))
            count = self._changes.get(index[p])
            if count is None or count.device != local.device:
                count = torch.zeros((), dtype=torch.int64, device=local.device)
                self._changes[index[p]] = count
            last = self._last_synced.get(p)
            if last is None or last.shape != local.shape or last.device != local.device:
                count.fill_(local.numel())
                self._last_synced[p] = local.detach().clone()
            else:
                count.copy_((local != last).sum())
                last.copy_(local)

    @property
    def last_sync_changes(self) -> Dict[int, int]:
        """With ``track_changes=True``: ``{index of a parameter (in param-group order):
        positions whose value changed at its last sync}``, read from the device now (one
        copy to the host; not to be read inside a CUDA graph capture)."""
        if not self._changes:
            return {}
        counts = list(self._changes.values())
        device = counts[0].device
        values = torch.stack([c.to(device) for c in counts]).tolist()
        return dict(zip(self._changes, values))

    def reset_sorted_init_(self, params: Optional[Iterable[torch.Tensor]] = None) -> None:
        """Takes the sorted initial rows again, from the parameters' current values (all
        parameters, or those given), e.g. after re-initialising or pruning the weights."""
        wanted = None if params is None else {id(p) for p in params}
        for group in self.param_groups:
            self._snapshot([p for p in group["params"] if wanted is None or id(p) in wanted], group)

    # --- torch.optim.Optimizer plumbing ---------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if isinstance(param_group, dict) and "params" in param_group:
            params = param_group["params"]
            if not isinstance(params, (torch.Tensor, set, list)):
                param_group["params"] = list(params)  # as torch.optim does: read it once
            groups = [*self.param_groups, _listed(param_group)]
            wanted = {id(p): p in self.sorted_inits for p in self._all_params()}
            wanted.update(self._wanted(groups[-1:]))
            _check_group(groups[-1], len(groups) - 1, groups, wanted)
            self._check_params(groups[-1], len(groups) - 1, groups, wanted)
            self._check_no_overlap(groups, wanted)
        else:
            wanted = None
        self.optimizer.add_param_group(param_group)  # torch.optim's own checks
        self._snapshot(self.param_groups[-1]["params"], self.param_groups[-1], wanted)

    def _all_params(self) -> List[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> Dict[str, Any]:
        """The inner optimizer's state dict in torch.optim's layout, with every permuted
        parameter's sorted initial rows (``"sorted_init"``, beside its inner state), the
        step counter and the parameters' shapes (``"laperm_step"``, ``"laperm_shapes"``,
        in every param group) merged in (laperm_kernels/optim/state_dict.py)."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state_dict = optim_state.pack(
            self.optimizer.state_dict(),
            self.param_groups,
            self.sorted_inits,
            self._step,
            type(self.optimizer),
        )
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            state_dict = state_dict if result is None else result
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a :meth:`state_dict` (or one of the layout before 0.2). Everything is
        checked before anything changes: a checkpoint that does not fit these parameters
        raises ValueError or TypeError and leaves the optimizer untouched. A state dict of
        the inner optimizer alone (a run resumed under LaPerm) loads into it, with a
        warning: S is then taken from the current weights and the step counter is 0."""
        if isinstance(state_dict, dict):
            state_dict = state_dict.copy()  # as torch.optim: the hooks get a shallow copy
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            state_dict = state_dict if result is None else result
        if optim_state.is_inner_only(state_dict):
            self._load_inner_only(state_dict)
        else:
            self._load(state_dict)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _load(self, state_dict: Dict[str, Any]) -> None:
        inner, step, sorted_inits = optim_state.unpack(
            state_dict, self.param_groups, type(self.optimizer)
        )
        self.optimizer.load_state_dict(inner)  # checks its own part first
        self._share_inner_state()
        self.sorted_inits = SortedInits(sorted_inits)
        self._pending = {}  # S is the checkpoint's: nothing to compare at the next step
        self._last_synced = {}
        if self.track_changes:
            for p in sorted_inits:
                self._last_synced[p] = (
                    local_tensor(p, _row_dim_of(p, self.param_groups)).detach().clone()
                )
        self._step = step

    def _load_inner_only(self, state_dict: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)  # torch.optim's checks
        self._share_inner_state()
        self.sorted_inits, self._pending, self._last_synced = SortedInits(), {}, {}
        for group in self.param_groups:
            self._snapshot(group["params"], group)  # compared again at the first step
        self._step = 0
        warnings.warn(
            f"LaPerm.load_state_dict: the checkpoint has no '{optim_state.SHAPES}': a state "
            f"dict of the inner optimizer ({type(self.optimizer).__name__}) alone, loaded "
            "into it. The sorted initial rows are taken from the current weights and the "
            "step counter starts at 0",
            UserWarning,
            stacklevel=3,
        )

    def _share_inner_state(self) -> None:
        # Optimizer.load_state_dict rebinds the inner param_groups and state: share them
        # again, or LR schedulers on the wrapper would stop reaching the inner optimizer.
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    # deepcopy and pickle: like torch.optim.Optimizer, hooks are not copied (nor a
    # check_finite result still on its way, nor an LR scheduler's patch of ``step``);
    # unlike its __getstate__ (defaults, state and param_groups only), everything else is.
    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_COPIED}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._finite_check = FiniteCheck()
        self._sync_plans, self._last_used = {}, []
        self._init_hooks()

    def __repr__(self) -> str:
        return (
            f"LaPerm(sync_period={self.sync_period!r}, permute={self.permute!r}, "
            f"backend={self.backend!r}, permuted_tensors={len(self.sorted_inits)},\n"
            f"  inner={self.optimizer!r})"
        )


# Rebuilt in a copy: a check_finite result on its way (it may hold a CUDA event), the
# cached sync plans (they hold the original's parameters).
_REBUILT = ("_finite_check", "_sync_plans", "_last_used")

_HOOKS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)

# What an LR scheduler adds to the optimizer it is given: ``step``, a wrapper of the
# class's step holding a weakref to this optimizer (a copy would step the original, and
# it cannot be pickled), and the flag it sets. A copy has no scheduler, as with torch.optim.
_SCHEDULER_PATCH = ("step", "_opt_called")

_NOT_COPIED = (*_HOOKS, *_REBUILT, *_SCHEDULER_PATCH)


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
    raise ValueError(
        f"{name} must be 'auto', True, False or a callable param -> bool; got {value!r}"
    )


def _check_ranks_arg(value) -> None:
    if isinstance(value, bool):
        return
    import torch.distributed as dist

    if dist.is_available() and isinstance(value, dist.ProcessGroup):
        return
    raise TypeError(
        f"check_ranks must be True, False or a torch.distributed ProcessGroup; got {value!r}"
    )


def _tensors(params) -> list:
    """The tensors of a param group's ``params`` (``(name, tensor)`` pairs allowed)."""
    return [q[1] if isinstance(q, tuple) and len(q) == 2 else q for q in params]


def _listed(group: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a group for ``add_param_group``'s checks: ``params`` as a list of
    tensors and names from ``(name, tensor)`` pairs, as torch.optim will read them."""
    params = group["params"]
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    named = [q for q in params if isinstance(q, tuple) and len(q) == 2]
    out = {**group, "params": _tensors(params)}
    if named and len(named) == len(params):
        out["param_names"] = [n for n, _ in named]
    return out


def _check_group(group: Dict[str, Any], index: int, groups, wanted: Dict[int, bool]) -> None:
    """Refuses bad ``sync_period`` and ``permute`` keys, and a permuted parameter listed
    twice (a sync would rank-match it twice; torch.optim only warns of a parameter listed
    twice, and steps it twice: that one is left to it)."""
    if "sync_period" in group:
        _check_sync_period(group["sync_period"], "param group 'sync_period'")
    if "permute" in group:
        _check_permute(group["permute"], "param group 'permute'")
    first: Dict[int, int] = {}
    for j, p in enumerate(_tensors(group["params"])):
        if id(p) in first and wanted.get(id(p)):
            raise ValueError(
                f"LaPerm: param group {index} lists "
                f"{label(groups, index, first[id(p)])} twice (at {first[id(p)]} "
                f"and {j}); list every permuted parameter once"
            )
        first.setdefault(id(p), j)
