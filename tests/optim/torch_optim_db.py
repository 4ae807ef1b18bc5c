"""torch's table of optimizers under test (``torch.testing._internal.common_optimizers.
optim_db``), imported without its import-time side effects on the rest of the suite.

Importing it imports ``torch.testing._internal.common_utils``, which freezes
``torch.backends`` flags (``torch.backends.cudnn.benchmark = True`` then raises; Lightning
and tests/integrations set it) and replaces ``ScriptFunction.__call__`` and
``ScriptMethod.__call__``. :func:`load` puts both back. The table needs the ``expecttest``
package (the ``test`` extra installs it); without it the calling module is skipped.
"""

from __future__ import annotations

import pytest
import torch

# torch.backends' switch for the freeze, in the namespace its flags_frozen() reads
_FLAG = "__allow_nonbracketed_mutation_flag"


def load() -> list:
    """``optim_db``, or a skip of the calling test module where it cannot be imported."""
    pytest.importorskip("expecttest", reason="torch's optim_db needs expecttest (test extra)")
    frozen = torch.backends.flags_frozen()
    calls = (torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__)
    try:
        from torch.testing._internal.common_optimizers import optim_db
    finally:
        torch.backends.flags_frozen.__globals__[_FLAG] = not frozen
        torch._C.ScriptFunction.__call__, torch._C.ScriptMethod.__call__ = calls
    return optim_db
