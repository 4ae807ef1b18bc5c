"""An optimizer around an inner one, as timm's Lookahead is: the torch.optim plumbing.

The wrapper shares the inner optimizer's ``param_groups``, ``defaults`` and ``state`` (so
LR schedulers, GradScaler and checkpointers work on it), runs torch.optim's hooks around
its state dict, and is copied and pickled without them. A subclass adds its own state:
``_state_dict()`` / ``_load_state_dict(state_dict)`` merge it into the inner one's, and
``_rebuild()`` makes again what a copy leaves out (``_REBUILT``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Tuple

from torch.optim import Optimizer

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


class InnerOptimizerWrapper(Optimizer):
    _REBUILT: Tuple[str, ...] = ()  # attributes a copy leaves out and _rebuild() makes

    def _wrap(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.defaults = optimizer.defaults
        self._share_inner_state()
        self._init_hooks()

    def _init_hooks(self) -> None:
        """What Optimizer.__init__ sets up, for hooks and LR schedulers."""
        for name in _HOOKS:
            setattr(self, name, OrderedDict())
        # As Optimizer.__init__ does: makes step hooks registered on the wrapper run.
        self._patch_step_function()

    def _share_inner_state(self) -> None:
        # Optimizer.load_state_dict rebinds the inner param_groups and state: share them
        # again, or LR schedulers on the wrapper would stop reaching the inner optimizer.
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict[str, Any]:
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state_dict = self._state_dict()
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            state_dict = state_dict if result is None else result
        return state_dict

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if isinstance(state_dict, dict):
            state_dict = state_dict.copy()  # as torch.optim: the hooks get a shallow copy
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            state_dict = state_dict if result is None else result
        self._load_state_dict(state_dict)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _state_dict(self) -> Dict[str, Any]:
        return self.optimizer.state_dict()

    def _load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self._share_inner_state()

    def _rebuild(self) -> None:
        pass

    # deepcopy and pickle: like torch.optim.Optimizer, hooks are not copied (nor what
    # _REBUILT names, nor an LR scheduler's patch of ``step``); unlike its __getstate__
    # (defaults, state and param_groups only), everything else is.
    def __getstate__(self) -> Dict[str, Any]:
        left_out = (*_HOOKS, *self._REBUILT, *_SCHEDULER_PATCH)
        return {k: v for k, v in self.__dict__.items() if k not in left_out}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._rebuild()
        self._init_hooks()
