"""Rank matching of rows longer than one block: sort chunks, rank by binary search.

A row of n > MAX_BLOCK (8,192) elements (the 11,008 of a LLaMA-7B MLP's down projection,
65,536, ...) does not fit one program's registers (a 16,384 block compiles, but ptxas
takes minutes for sm_80). It is cut into
C = ceil(n / CHUNK) chunks and done in two launches with an int64 scratch buffer of
C * CHUNK keys per row (the backend processes long rows in batches so scratch stays
bounded).

1. ``sort_chunks_kernel``, one program per (row, chunk): build the chunk's packed keys
   (keys.py; the column is the element's column in the whole row, so keys are unique
   across the row), ``tl.sort`` them on chip, store the sorted chunk to scratch. The tail
   of the last chunk is padded with PAD_KEY, larger than every real key, so every scratch
   chunk is a full, sorted CHUNK.

2. ``rank_scatter_kernel``, one program per (row, chunk): load the chunk's sorted keys a.
   Because keys are unique, the rank of a in its row is exact and equals::

       rank(a) = sum over chunks c' of #{b in chunk c' : b < a}

   (for a's own chunk that count is a's position in it). Each count is a branch-free
   binary search (lower bound) of the whole vector a in the sorted chunk c': log2(CHUNK)
   probe steps, then one last compare. Padding keys are never < a real key. Then
   ``W[column(a)] = S[rank(a)]``: S is gathered, W scattered, both within the row.

Global traffic per element: read W (2-4 B), write and read its key (16 B), read S,
write W, plus the probes, which hit a scratch chunk of CHUNK*8 bytes (L1/L2-resident) C
times log2(CHUNK) per element. It is several times the 12 B/element of the one-block
kernel, which is why MAX_BLOCK is as large as compiles quickly (docs/triton.md).
CHUNK = 4096 keeps the chunk sort a cheap-to-compile tile (16 warps, ~10-20 s).
"""

import triton
import triton.language as tl

from .keys import key_column, packed_keys

CHUNK = 4096          # keys sorted per program (power of two, a rank_match_block bucket)
SORT_WARPS = 16       # as the block kernel for this tile size
RANK_WARPS = 8


@triton.jit
def sort_chunks_kernel(
    w_addr,        # *int64 [num_rows]: address of each row of W (bit patterns)
    lengths,       # *int32 [num_rows]: n of each row
    key_offsets,   # *int64 [num_rows]: first scratch slot of each row (C * CHUNK per row)
    scratch,       # *int64: sorted chunks, written here
    KIND: tl.constexpr,
    CHUNK: tl.constexpr,
):
    ELEM: tl.constexpr = tl.int32 if KIND == 0 else tl.int16
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    n = tl.load(lengths + row)
    start = chunk * CHUNK
    if start < n:  # the grid covers the longest row of the launch; shorter rows stop early
        w_row = tl.load(w_addr + row).to(tl.pointer_type(ELEM))
        cols = start + tl.arange(0, CHUNK)
        valid = cols < n
        bits = tl.load(w_row + cols, mask=valid, other=0)
        keys = tl.sort(packed_keys(bits, cols, valid, KIND))
        tl.store(scratch + tl.load(key_offsets + row) + cols, keys)


@triton.jit
def rank_scatter_kernel(
    w_addr,        # *int64 [num_rows]: address of each row of W (scattered into)
    s_addr,        # *int64 [num_rows]: address of each row of S
    lengths,       # *int32 [num_rows]
    key_offsets,   # *int64 [num_rows]
    scratch,       # *int64: sorted chunks from sort_chunks_kernel
    KIND: tl.constexpr,
    CHUNK: tl.constexpr,
    LOG2_CHUNK: tl.constexpr,
):
    ELEM: tl.constexpr = tl.int32 if KIND == 0 else tl.int16
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    n = tl.load(lengths + row)
    start = chunk * CHUNK
    if start < n:
        row_keys = scratch + tl.load(key_offsets + row)
        idx = tl.arange(0, CHUNK)
        a = tl.load(row_keys + start + idx)
        valid = start + idx < n   # real keys sort first in the chunk: the first n - start
        num_chunks = tl.cdiv(n, CHUNK)
        rank = tl.zeros([CHUNK], dtype=tl.int32)
        for c in range(0, num_chunks):
            base = row_keys + c * CHUNK
            # lower_bound of every a in the sorted chunk c: binary lifting, widest step
            # first; afterwards pos = min(count, CHUNK - 1), and one compare finishes it.
            pos = tl.zeros([CHUNK], dtype=tl.int32)
            for k in tl.static_range(LOG2_CHUNK):
                step = (CHUNK >> 1) >> k
                probe = tl.load(base + pos + (step - 1))
                pos = tl.where(probe < a, pos + step, pos)
            probe = tl.load(base + pos)
            rank += pos + (probe < a).to(tl.int32)
        s_row = tl.load(s_addr + row).to(tl.pointer_type(ELEM))
        w_row = tl.load(w_addr + row).to(tl.pointer_type(ELEM))
        s = tl.load(s_row + rank, mask=valid, other=0)
        tl.store(w_row + key_column(a), s, mask=valid)
