"""laperm-kernels: in-place rank matching for LaPerm ("Train by Reconnect", NeurIPS 2020).

    import laperm_kernels as lk
    S = lk.sort_rows(W)         # once, at initialisation
    ...                         # train W with any optimizer
    lk.rank_match_(W, S)        # W's rows become S's values, in W's rank order

See README.md for the contract, the backends and the benchmark.
"""

from . import _extension  # noqa: F401  (loads the compiled ops when built)
from ._version import __version__ as __version__
from .ops.backends.plan_cache import release_captured as release_captured_plans
from .ops.dispatch import report as dispatch_report
from .ops.graph_capture import NotPreparedForCapture
from .ops.rank_match import available_backends, rank_match_, rank_match_many_, sort_rows
from .ops.reference import SUPPORTED_DTYPES
from .optim.laperm import LaPerm
from .optim.param_groups import param_groups
from .utils import agnosticize_, random_prune_
from .viz import weight_profile
from .wiring import rewire_, wiring

__all__ = [
    "LaPerm",
    "NotPreparedForCapture",
    "SUPPORTED_DTYPES",
    "agnosticize_",
    "available_backends",
    "param_groups",
    "dispatch_report",
    "rank_match_",
    "random_prune_",
    "release_captured_plans",
    "rewire_",
    "rank_match_many_",
    "sort_rows",
    "weight_profile",
    "wiring",
]
