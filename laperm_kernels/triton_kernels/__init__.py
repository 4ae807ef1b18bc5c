"""Triton kernels for rank matching (docs/contract.md), one kernel per file, the design in each
file's docstring. Importing this package imports triton; laperm_kernels.backends.triton
does so only when the backend is used, so triton stays an optional dependency.

- keys.py: the ordering contract as packed int64 keys (order key << 32 | column).
- rank_match_block.py: rows of up to MAX_BLOCK elements, one sort + scatter per row, no
  scratch; several short rows per program.
- rank_match_chunked.py: longer rows: sort chunks to a bounded scratch, then rank each
  element across chunks by binary search and scatter.
"""

from .keys import KIND_BFLOAT16, KIND_FLOAT16, KIND_FLOAT32, PAD_KEY
from .rank_match_block import CONFIGS as BLOCK_CONFIGS
from .rank_match_block import MAX_BLOCK, rank_match_block_kernel
from .rank_match_chunked import (CHUNK, RANK_WARPS, SORT_WARPS, rank_scatter_kernel,
                                 sort_chunks_kernel)

__all__ = [
    "KIND_FLOAT32", "KIND_FLOAT16", "KIND_BFLOAT16", "PAD_KEY",
    "BLOCK_CONFIGS", "MAX_BLOCK", "rank_match_block_kernel",
    "CHUNK", "SORT_WARPS", "RANK_WARPS", "sort_chunks_kernel", "rank_scatter_kernel",
]
