"""Rank matching of rows that fit one block: one sort on chip, one scatter, no scratch.

Math. For a row w of n <= BLOCK elements and its sorted initial values s, rank matching
writes ``w[order[i]] = s[i]``, where ``order`` is w's stable ascending order (docs/contract.md).
With unique packed keys k_j = key(w_j) << 32 | j (keys.py), sorting k gives ``order``
directly: ``order[i]`` is the column in the low half of the i-th smallest key. So::

    k      = packed_keys(w)          # one int64 per element, in registers
    k      = tl.sort(k)              # bitonic network on chip (no argsort needed)
    w[col(k[i])] = s[i]              # i = 0..n-1: read s in order, scatter into w

Memory traffic is the minimum: read w, read s (coalesced), write w (a scatter within the
row's own few KiB, which stays in L2). Nothing else touches global memory.

Tiles. A program handles ROWS rows of one bucket at once, a [ROWS, BLOCK] tile sorted
along its last axis (ROWS = 1 for big blocks). Several short rows per program keep every
program's work similar and, under TRITON_INTERPRET=1, vectorise across rows (10-40x faster
than one row per program there); on a GPU it costs nothing. Padding lanes (column >= n)
get the largest key, sort last, and are masked off the scatter.

Rows of many tensors go in one launch: ``w_addr``/``s_addr`` hold each row's absolute
address (int64, cast to a pointer in the kernel) and ``lengths`` its n, so a whole
model's rows of one dtype and bucket are one launch (the tensors are separate
allocations; a table of addresses avoids copying them into one buffer). Rows past
``num_rows`` in the last tile are masked. Row indices are int32: the backend launches at
most 2^30 rows at a time (a bucket with more is several launches).

Configurations (BLOCK, ROWS, num_warps) live in CONFIGS; tools/aot_compile_triton.py
compiles every one for sm_80 and sm_90. tl.sort's bitonic network unrolls log2(BLOCK)^2/2
compare-exchange stages; with too few warps for the tile, ptxas time explodes (measured:
BLOCK=1024 with 4 warps > 9 min, with 8 warps 3-5 s), so every tile of >= 1024 keys gets
>= 8 warps. BLOCK=16384 (32 warps, 64 registers, no spills) compiled in 34 s for sm_90
but 155 s for sm_80, so it is not shipped: longer rows take the merge sort of
sort_chunks.py and merge_runs.py.
"""

import triton
import triton.language as tl

from .keys import key_column, packed_keys

# BLOCK -> (ROWS per program, num_warps). Buckets are powers of two; a row of n elements
# goes to the smallest BLOCK >= n. Tiles hold 2,048 keys until a row alone is bigger.
CONFIGS = {
    64: (32, 8),
    128: (16, 8),
    256: (8, 8),
    512: (4, 8),
    1024: (2, 8),
    2048: (1, 8),
    4096: (1, 16),
    8192: (1, 32),
}
MAX_BLOCK = max(CONFIGS)


# A plain int argument is specialised on (1, multiples of 16, the rest): one compile each.
@triton.jit(do_not_specialize=["num_rows"])
def rank_match_block_kernel(
    w_addr,  # *int64 [num_rows]: address of each row of W (bit patterns, in place)
    s_addr,  # *int64 [num_rows]: address of each row of S
    lengths,  # *int32 [num_rows]: n of each row, 1 <= n <= BLOCK
    num_rows,
    KIND: tl.constexpr,  # keys.py: 0 float32, 1 float16, 2 bfloat16
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    ELEM: tl.constexpr = tl.int32 if KIND == 0 else tl.int16
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < num_rows
    n = tl.load(lengths + rows, mask=row_ok, other=0)
    w_row = tl.load(w_addr + rows, mask=row_ok, other=0).to(tl.pointer_type(ELEM))
    s_row = tl.load(s_addr + rows, mask=row_ok, other=0).to(tl.pointer_type(ELEM))

    cols = tl.arange(0, BLOCK)
    valid = cols[None, :] < n[:, None]  # [ROWS, BLOCK]
    bits = tl.load(w_row[:, None] + cols[None, :], mask=valid, other=0)
    keys = tl.sort(packed_keys(bits, cols[None, :], valid, KIND), dim=1)

    # i-th smallest key -> column of W that receives S[i]; padding sorted last, masked.
    s = tl.load(s_row[:, None] + cols[None, :], mask=valid, other=0)
    tl.store(w_row[:, None] + key_column(keys), s, mask=valid)
