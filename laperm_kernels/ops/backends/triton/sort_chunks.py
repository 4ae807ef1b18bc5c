"""Long rows, step 1 of 2: sort each CHUNK-key chunk of a row into a scratch run.

A row of n > MAX_BLOCK (8,192) elements (the 11,008 of a LLaMA-7B MLP's down projection,
65,536, ..., up to 2^31 - 1) does not fit one program's registers (a 16,384 block
compiles, but ptxas takes minutes for sm_80). It is rank-matched as a merge sort of its
packed keys (keys.py) in an int64 scratch holding the row's n keys (two such buffers,
ping-pong, for rows of more than two chunks):

1. this kernel, one program per chunk: build the chunk's keys (the column is the
   element's column in the whole row, so keys are unique across the row), ``tl.sort``
   them on chip and store the chunk's real keys, sorted, to the row's scratch. The row is
   then C = ceil(n / CHUNK) sorted runs of CHUNK keys (the last one shorter);
2. ``merge_runs_kernel`` (merge_runs.py), ceil(log2 C) launches: each merges pairs of
   adjacent runs into runs twice as long; the last one, instead of storing the merged
   row, scatters ``W[column(key_i)] = S[i]``.

Programs. The backend gives each program one (row, chunk) pair through two int32 tables
(``tile_row``, ``tile_start``): all chunks of all rows of a batch on grid axis 0, so a
launch needs no more than one program per CHUNK keys whatever the rows' lengths (CUDA
caps grid axis 1 at 65,535, axis 0 at 2^31 - 1). The same table serves the merge passes,
whose programs also cover CHUNK keys each.

Traffic: read W (2-4 B/element), write the key (8 B). CHUNK = 4,096 is the
rank_match_block tile of that size (16 warps, compiles in ~10-20 s).
"""

import triton
import triton.language as tl

from .keys import packed_keys

CHUNK = 4096  # keys sorted per program (power of two, a rank_match_block bucket)
SORT_WARPS = 16  # as the block kernel for this tile size


@triton.jit
def sort_chunks_kernel(
    w_addr,  # *int64 [rows]: address of each row of W (bit patterns)
    lengths,  # *int32 [rows]: n of each row
    key_offsets,  # *int64 [rows]: first slot of each row's n keys in scratch
    tile_row,  # *int32 [programs]: the row of each program
    tile_start,  # *int32 [programs]: the first column of its chunk (a multiple of CHUNK)
    scratch,  # *int64: each row's keys, sorted within each chunk, written here
    KIND: tl.constexpr,  # keys.py: 0 float32, 1 float16, 2 bfloat16
    CHUNK: tl.constexpr,
):
    ELEM: tl.constexpr = tl.int32 if KIND == 0 else tl.int16
    pid = tl.program_id(0)
    row = tl.load(tile_row + pid)
    start = tl.load(tile_start + pid)
    n = tl.load(lengths + row)
    w_row = tl.load(w_addr + row).to(tl.pointer_type(ELEM))

    cols = start + tl.arange(0, CHUNK)
    valid = cols < n
    bits = tl.load(w_row + cols, mask=valid, other=0)
    keys = tl.sort(packed_keys(bits, cols, valid, KIND))  # padding (PAD_KEY) sorts last
    tl.store(scratch + tl.load(key_offsets + row) + cols, keys, mask=valid)
