"""The LaPerm optimizer wrapper and what it alone uses.

- ``laperm``: ``LaPerm`` (the wrapper, its step and its sync)
- ``param_groups``: ``param_groups(model)``, groups with ``row_dim`` from a model
- ``state_dict``: LaPerm's state merged into the inner optimizer's state dict
- ``sync_plan``: what a sync hands the ops, made once; ``first_step``: the first-step
  checks; ``finite_check``: ``check_finite``'s max-|w| reading
- ``layouts``, ``sharded_rows``: a parameter's rows (row_dim, DTensor placements)
- ``param_names``: names in errors; ``step_hooks``: torch.optim's step hooks, run once
"""

from .laperm import LaPerm
from .param_groups import param_groups

__all__ = ["LaPerm", "param_groups"]
