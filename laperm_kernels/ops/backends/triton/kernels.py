"""Triton kernels for rank matching (docs/contract.md), one kernel per file, the design in each
file's docstring. Importing this package imports triton; laperm_kernels.ops.backends.triton.backend
does so only when the backend is used, so triton stays an optional dependency.

- keys.py: the ordering contract as packed int64 keys (order key << 32 | column).
- rank_match_block.py: rows of up to MAX_BLOCK elements, one sort + scatter per row, no
  scratch; several short rows per program.
- sort_chunks.py, merge_runs.py: longer rows, a merge sort in scratch: sort CHUNK-key
  chunks, then merge runs pairwise (merge path) in ceil(log2(chunks)) passes, the last
  of which scatters S into W.
"""

from .keys import KIND_BFLOAT16, KIND_FLOAT16, KIND_FLOAT32, PAD_KEY
from .merge_runs import MERGE_WARPS, merge_runs_kernel
from .rank_match_block import CONFIGS as BLOCK_CONFIGS
from .rank_match_block import MAX_BLOCK, rank_match_block_kernel
from .sort_chunks import CHUNK, SORT_WARPS, sort_chunks_kernel

__all__ = [
    "KIND_FLOAT32",
    "KIND_FLOAT16",
    "KIND_BFLOAT16",
    "PAD_KEY",
    "BLOCK_CONFIGS",
    "MAX_BLOCK",
    "rank_match_block_kernel",
    "CHUNK",
    "SORT_WARPS",
    "sort_chunks_kernel",
    "MERGE_WARPS",
    "merge_runs_kernel",
]
