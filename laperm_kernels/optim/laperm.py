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
state (e.g. Adam moments) is kept across syncs, as in the paper's official code. The
wrapping itself, as timm's Lookahead does it, is wrapper.py's; the checks, checks.py's.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from torch.optim import Optimizer

from ..ops import graph_capture
from ..ops.rank_match import check_backend_name, sort_rows
from . import change_counts, checks, finite_check, first_step, step_hooks
from . import state_dict as optim_state
from .finite_check import FiniteCheck
from .layouts import like_param, local_tensor, row_dim_of
from .param_names import labels
from .sharded_rows import whole_rows
from .sync_plan import SortedInits, SyncPlans
from .wrapper import InnerOptimizerWrapper

SyncPeriod = Union[int, Callable[[int], int]]
PermuteRule = Union[str, bool, Callable[[torch.Tensor], bool]]


class LaPerm(InnerOptimizerWrapper):
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
        checks.check_sync_period(sync_period, "sync_period")
        checks.check_permute(permute, "permute")
        checks.check_ranks_arg(check_ranks)
        check_backend_name(backend)  # now, not at the first sync k steps later
        self._wrap(optimizer)  # its param_groups and state, shared (wrapper.py)
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
        self._sync_plans = SyncPlans()
        self._last_used: list = []
        self.sorted_inits: Dict[torch.Tensor, torch.Tensor] = SortedInits()
        self._changes: Dict[int, torch.Tensor] = {}  # last_sync_changes, on the device
        self.sync_backends: Dict[str, str] = {}
        self._last_synced: Dict[torch.Tensor, torch.Tensor] = {}
        self._step = 0
        wanted = self._wanted(self.param_groups)  # the permute rule, asked once a parameter
        checks.check_groups(self.param_groups, wanted)
        for group in self.param_groups:
            self._snapshot(group["params"], group, wanted)

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
        (first_step.py). Called while ``self._pending`` holds them."""
        if graph_capture.capturing_any(self._pending):
            return  # it reads values back: left for the next eager step (docs/capture.md)
        params = [p for p in self._all_params() if p in self._pending]
        retake = first_step.check(
            params, self._pending, labels(self.param_groups), self.check_ranks
        )
        if retake:  # on every rank alike: a DTensor's S may take a collective
            for g in self.param_groups:
                self._snapshot([p for p in g["params"] if p in self._pending], g)
        self._pending = {}

    @torch.no_grad()
    def _sync(self, groups) -> None:
        plan = self._sync_plans.plan(groups, self.param_groups, self.sorted_inits)
        if not plan.pairs:
            return
        check = (
            self.check_finite
            and not self._warned_not_finite
            and self._finite_check.ready(plan.params)
        )
        try:
            used, max_abs, _ = plan.run(self.backend, max_abs=check)
        except (TypeError, ValueError):
            checks.check_layout(
                plan.pairs, self.sorted_inits, self.param_groups
            )  # a cast or moved model: say so, not the ops
            raise
        if check:
            self._finite_check.record(self._step, max_abs, plan.labels)
            self._report_not_finite()  # on the CPU the result is there already
        if used != self._last_used:
            self._last_used = used
            for device, dtype, name in used:
                self.sync_backends[f"{device} {str(dtype).replace('torch.', '')}"] = name
        if self.track_changes:
            self._trace([p for p, _ in plan.pairs])

    def _report_not_finite(self) -> None:
        """Warns once if a finished check found NaN or inf (finite_check.warn); never
        waits for a check still on its way from the GPU."""
        found = self._finite_check.result()
        if found is not None and found[1] and not self._warned_not_finite:
            self._warned_not_finite = True
            finite_check.warn(*found)

    def _period(self, group, step: int) -> int:
        return checks.period(group.get("sync_period", self.sync_period), step)

    def _wants(self, p: torch.Tensor, group) -> bool:
        return checks.wants(p, group.get("permute", self.permute))

    def _wanted(self, groups) -> Dict[int, bool]:
        """``{id(tensor): whether it is permuted}`` for the tensors of ``groups``."""
        return {
            id(p): self._wants(p, g)
            for g in groups
            for p in checks.tensors(g["params"])
            if isinstance(p, torch.Tensor)
        }

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
        """``track_changes``: the changes of this sync, counted on the device
        (change_counts.py)."""
        index = {p: i for i, p in enumerate(self._all_params())}
        locals_ = [(index[p], p, local_tensor(p, row_dim_of(p, self.param_groups))) for p in params]
        change_counts.count(locals_, self._changes, self._last_synced)

    @property
    def last_sync_changes(self) -> Dict[int, int]:
        """With ``track_changes=True``: ``{index of a parameter (in param-group order):
        positions whose value changed at its last sync}``, read from the device now (one
        copy to the host; not to be read inside a CUDA graph capture)."""
        return change_counts.read(self._changes)

    def reset_sorted_init_(self, params: Optional[Iterable[torch.Tensor]] = None) -> None:
        """Takes the sorted initial rows again, from the parameters' current values (all
        parameters, or those given), e.g. after re-initialising or pruning the weights."""
        wanted = None if params is None else {id(p) for p in params}
        for group in self.param_groups:
            self._snapshot([p for p in group["params"] if wanted is None or id(p) in wanted], group)

    # --- torch.optim.Optimizer plumbing ---------------------------------------------------

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if isinstance(param_group, dict) and "params" in param_group:
            params = param_group["params"]
            if not isinstance(params, (torch.Tensor, set, list)):
                param_group["params"] = list(params)  # as torch.optim does: read it once
            groups = [*self.param_groups, checks.listed(param_group)]
            wanted = {id(p): p in self.sorted_inits for p in self._all_params()}
            wanted.update(self._wanted(groups[-1:]))
            checks.check_groups(groups, wanted, first=len(groups) - 1)
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
        return super().state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a :meth:`state_dict` (or one of the layout before 0.2). Everything is
        checked before anything changes: a checkpoint that does not fit these parameters
        raises ValueError or TypeError and leaves the optimizer untouched. A state dict of
        the inner optimizer alone (a run resumed under LaPerm) loads into it, with a
        warning: S is then taken from the current weights and the step counter is 0."""
        super().load_state_dict(state_dict)

    def _state_dict(self) -> Dict[str, Any]:
        return optim_state.pack(
            self.optimizer.state_dict(),
            self.param_groups,
            self.sorted_inits,
            self._step,
            type(self.optimizer),
        )

    def _load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if optim_state.is_inner_only(state_dict):
            self._load_inner_only(state_dict)
        else:
            self._load(state_dict)

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
                    local_tensor(p, row_dim_of(p, self.param_groups)).detach().clone()
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
            stacklevel=5,
        )

    # Rebuilt in a copy: a check_finite result on its way (it may hold a CUDA event), the
    # cached sync plans (they hold the original's parameters).
    _REBUILT = ("_finite_check", "_sync_plans", "_last_used")

    def _rebuild(self) -> None:
        self._finite_check = FiniteCheck()
        self._sync_plans, self._last_used = SyncPlans(), []

    def __repr__(self) -> str:
        return (
            f"LaPerm(sync_period={self.sync_period!r}, permute={self.permute!r}, "
            f"backend={self.backend!r}, permuted_tensors={len(self.sorted_inits)},\n"
            f"  inner={self.optimizer!r})"
        )
