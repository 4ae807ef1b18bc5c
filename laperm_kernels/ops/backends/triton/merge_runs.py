"""Long rows, step 2 of 2: merge sorted runs pairwise; the last pass scatters S into W.

After sort_chunks.py a row's n keys lie in scratch as sorted runs of CHUNK keys (the last
one shorter). One launch of this kernel is one pass of a bottom-up merge sort with runs of
``run`` keys (CHUNK, 2 CHUNK, 4 CHUNK, ...): the pair of runs A = keys[p : p+run] and
B = keys[p+run : p+2 run] (p a multiple of 2 run; the row's end may cut B short or leave
it empty, and then A may be short too) becomes one sorted run of twice the length in the
other scratch buffer. After ceil(log2(C)) passes, C = ceil(n / CHUNK), the row is one
run; the pass that gets there (``2 run >= n``) does not store it: key i of the merged row
has rank i, so it writes ``W[column(key_i)] = S[i]``, exactly the block kernel's scatter.

Math. Keys are unique (the column is in the low bits, keys.py), so the merged position of
a key is its own index in its run plus the number of keys of the other run below it::

    out(A[i]) = i + #{j : B[j] < A[i]}        out(B[j]) = j + #{i : A[i] < B[j]}

and these positions are a permutation of 0 .. |A|+|B|-1 (no two keys compare equal, so
the merge is the stable one and needs no tie rule).

Programs (merge path; Odeh et al. 2012, Green et al. 2012). A program owns the output
positions [d0, d1) of one pair, d1 - d0 <= CHUNK. The first d keys of merge(A, B) are
A[:a(d)] and B[:d - a(d)], where a(d) is the one split with A[a-1] < B[d-a] and
B[d-a-1] < A[a]; it is found by bisection over a, testing ``A[a] < B[d-1-a]``
(``merge_path``: log2(run) + 1 probes, done for d0 and d1 together). The program's keys
are then exactly A[a0:a1] and B[b0:b1] (b = d - a), at most CHUNK of them, and for each
the count in the other run is b0 (or a0) plus a lower bound in the other *slice*, which
holds at most CHUNK keys: a branch-free binary search of log2(CHUNK) + 1 probes
(``lower_bound``). So

    out(A[a0+i]) - d0 = i + lower_bound(B[b0:b1], A[a0+i])     (and symmetrically for B)

A program's work is bounded the same way whatever the data (one whose keys all come
from one run skips the searches); the slices it probes are at most 2 x CHUNK x 8 bytes
(L1/L2-resident), its keys and its output are two and one contiguous ranges of global
memory.

Cost per element and pass: 16 B of key traffic (read, write; the last pass reads the key
and S and writes W) and log2(CHUNK) + 1 = 13 probes, plus per program log2(run) + 1
bisection steps (two lanes: both diagonals). A row of C chunks costs one chunk sort and
ceil(log2 C) passes: O(n log CHUNK log C) work, O(n log C) bytes (docs/triton.md has the
estimate).

The backend gives each program one (row, tile) pair through ``tile_row``/``tile_start``
(the table of sort_chunks.py: tile = chunk). Rows are ordered longest first, so the rows
still unmerged at a pass are a prefix of the table and each pass launches exactly their
programs; a program whose row is already done (n <= run) returns.
"""

import triton
import triton.language as tl

from .keys import key_column

MERGE_WARPS = 16  # CHUNK = 4,096 keys per program: 8 per thread


@triton.jit
def merge_path(base, a_len, b_len, diag, max_len):
    """For each diagonal d in ``diag``: how many of the first d keys of merge(A, B) come
    from A, where A = base[0:a_len] and B = base[a_len:a_len+b_len] are sorted and keys
    are unique. Bisection on [max(0, d - b_len), min(d, a_len)], an interval of at most
    ``max_len`` (a power of two) keys: log2(max_len) + 1 halvings close it."""
    lo = tl.maximum(diag - b_len, 0)
    hi = tl.minimum(diag, a_len)
    span = max_len
    while span > 0:
        mid = (lo + hi) // 2
        open_ = lo < hi
        a = tl.load(base + mid, mask=open_, other=0)
        b = tl.load(base + a_len + (diag - 1 - mid), mask=open_, other=0)
        lo = tl.where(open_ & (a < b), mid + 1, lo)  # A[mid] is among the first d
        hi = tl.where(open_ & (a >= b), mid, hi)
        span = span // 2
    return lo


@triton.jit
def lower_bound(base, lo, length, keys, LOG2_MAX: tl.constexpr):
    """Per lane, #{j < length : base[lo + j] < key}, for sorted slices of at most
    2^LOG2_MAX keys. Binary lifting over the slice padded with PAD_KEY (above every real
    key) to 2^LOG2_MAX: widest step first; afterwards pos <= 2^LOG2_MAX - 1 and one more
    compare finishes it."""
    pos = tl.zeros_like(lo)
    for k in tl.static_range(LOG2_MAX):
        step = (1 << (LOG2_MAX - 1)) >> k
        probe_at = pos + (step - 1)
        probe = tl.load(base + lo + probe_at, mask=probe_at < length, other=0x7FFFFFFFFFFFFFFF)
        pos = tl.where(probe < keys, pos + step, pos)
    probe = tl.load(base + lo + pos, mask=pos < length, other=0x7FFFFFFFFFFFFFFF)
    return pos + (probe < keys).to(pos.dtype)


# A plain int argument is specialised on (1, multiples of 16, the rest): one compile each.
@triton.jit(do_not_specialize=["run"])
def merge_runs_kernel(
    w_addr,  # *int64 [rows]: address of each row of W (scattered into by the last pass)
    s_addr,  # *int64 [rows]: address of each row of S
    lengths,  # *int32 [rows]: n of each row
    key_offsets,  # *int64 [rows]: first slot of each row's n keys in src and dst
    tile_row,  # *int32 [programs]: the row of each program
    tile_start,  # *int32 [programs]: its first output position (a multiple of CHUNK)
    src,  # *int64: runs of ``run`` sorted keys
    dst,  # *int64: runs of 2 ``run`` sorted keys, written (unused by a last pass)
    run,  # keys per sorted run of src: CHUNK << pass (a power of two)
    KIND: tl.constexpr,  # keys.py: 0 float32, 1 float16, 2 bfloat16
    CHUNK: tl.constexpr,
    LOG2_CHUNK: tl.constexpr,
):
    ELEM: tl.constexpr = tl.int32 if KIND == 0 else tl.int16
    pid = tl.program_id(0)
    row = tl.load(tile_row + pid)
    start = tl.load(tile_start + pid)
    n = tl.load(lengths + row)
    if n > run:  # else the row is one run already: done by an earlier pass
        # The pair of runs holding output positions start .. start + CHUNK - 1. Products
        # stay below start, so nothing overflows int32 even for n = 2^31 - 1.
        pair = ((start // run) & ~1) * run
        a_len = tl.minimum(n - pair, run)
        b_len = tl.minimum(n - pair - a_len, run)
        d0 = start - pair
        d1 = d0 + tl.minimum(a_len + b_len - d0, CHUNK)
        first_key = tl.load(key_offsets + row)
        base = src + first_key + pair  # A = base[0:a_len], B = base[a_len:a_len+b_len]

        # Merge path: the program's keys are A[a0:a1] and B[d0-a0:d1-a1]; a(d) grows with
        # d, so of the two splits the smaller is a(d0).
        cut = merge_path(base, a_len, b_len, d0 + tl.arange(0, 2) * (d1 - d0), run)
        a0 = tl.min(cut, axis=0)
        na = tl.max(cut, axis=0) - a0
        nb = d1 - d0 - na
        b0 = d0 - a0

        lane = tl.arange(0, CHUNK)
        valid = lane < na + nb
        from_a = lane < na
        own = tl.where(from_a, lane, lane - na)  # index within its own slice
        key = tl.load(
            base + tl.where(from_a, a0, a_len + b0) + own, mask=valid, other=0x7FFFFFFFFFFFFFFF
        )
        rank = d0 + own  # position in the merged pair
        if (na > 0) & (nb > 0):  # else every key comes from one run, already in order
            rank += lower_bound(
                base, tl.where(from_a, a_len + b0, a0), tl.where(from_a, nb, na), key, LOG2_CHUNK
            )

        if run >= n - run:  # the last pass: the pair is the whole row, rank is the rank
            s_row = tl.load(s_addr + row).to(tl.pointer_type(ELEM))
            w_row = tl.load(w_addr + row).to(tl.pointer_type(ELEM))
            s = tl.load(s_row + rank, mask=valid, other=0)
            tl.store(w_row + key_column(key), s, mask=valid)
        else:
            tl.store(dst + first_key + pair + rank, key, mask=valid)
