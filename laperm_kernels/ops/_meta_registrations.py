"""The fake (meta) kernels of the ``torch.ops.laperm`` operators, for torch.compile and
torch.library.opcheck: what each op returns given only shapes, dtypes and devices.

``TORCH_LIBRARY(laperm, ...)`` (csrc/laperm.cpp) names this module with
``m.set_python_module``, and torch checks at a fake kernel's first call that it was
registered here. Registered only when the extension loaded (the ops exist then).
The ``laperm_testing`` operators have none: none is traced.
"""

from __future__ import annotations

import torch

from .. import _extension

if _extension.is_loaded():

    @torch.library.register_fake("laperm::rank_match_many_")
    def _rank_match_many_fake(weights, sorted_inits):
        # In place, nothing returned: shapes, dtypes and devices are those of the inputs.
        return None

    @torch.library.register_fake("laperm::rank_match_planned_")
    def _rank_match_planned_fake(weights, sorted_inits, plan, rows, segment_offsets, scratch=None):
        return None
