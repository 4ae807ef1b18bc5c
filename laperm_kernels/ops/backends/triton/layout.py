"""The triton backend's layout: what to launch, from row descriptions alone (no tensors,
no device). Rows of all tensors are bucketed by the power-of-two block that holds them
(one launch of ``rank_match_block_kernel`` per bucket, split below int32 rows); longer
rows go, longest first, into batches that share one scratch (a chunk sort, then merge
passes). ``plan_layout`` checks every size limit (docs/triton.md, "Limits") before
anything is planned; launches.py turns a layout into device tables and launches.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence, Tuple

MIN_BLOCK = 64

# Size limits (docs/triton.md, "Limits"), checked by plan_layout before anything runs.
MAX_ROW_LENGTH = 2**31 - 1  # columns are packed in 32 bits and read as int32; lengths are int32
MAX_PROGRAMS = 2**31 - 1  # CUDA's grid.x (every launch uses grid axis 0 only)
LAUNCH_ROWS = 1 << 30  # rows per block launch: row indices stay int32 inside the kernel
SEGMENT_KEYS = 16  # each long row's scratch segment starts on a 128-byte line

# A piece is (W address, S address, rows, n, bytes per row): consecutive rows of a tensor.
Piece = Tuple[int, int, int, int, int]


class BlockLaunch(NamedTuple):
    block: int  # BLOCK of rank_match_block_kernel
    pieces: List[Piece]  # its rows, in table order
    rows: int


class Batch(NamedTuple):
    """Long rows that share one scratch: one sort_chunks launch, then ``len(programs)``
    merge passes. ``programs[p]`` is the grid of pass p: the tiles of the rows still
    unmerged there, a prefix of the tile table since rows go longest first. programs[0]
    counts every tile, and is the sort's grid too."""

    pieces: List[Piece]
    keys: int  # scratch keys per buffer (segments of SEGMENT_KEYS)
    programs: List[int]

    @property
    def buffers(self) -> int:
        return 2 if len(self.programs) > 1 else 1  # ping-pong once there are two passes


class Layout(NamedTuple):
    blocks: List[BlockLaunch]
    batches: List[Batch]
    scratch_keys: int  # the largest batch's keys x buffers: the call's scratch


def _segment(n: int) -> int:
    return -(-n // SEGMENT_KEYS) * SEGMENT_KEYS


def _chunks(n: int, chunk: int) -> int:
    return -(-n // chunk)


def _passes(n: int, chunk: int) -> int:
    """Merge passes of a row of n > chunk elements: ceil(log2(chunks))."""
    return (_chunks(n, chunk) - 1).bit_length()


def _check_programs(programs: int, what: str) -> None:
    if programs > MAX_PROGRAMS:
        raise ValueError(
            f"the triton backend would launch {programs:,} programs for {what}, "
            f"more than CUDA's grid allows ({MAX_PROGRAMS:,})"
        )


def plan_layout(
    pieces: Sequence[Piece],
    max_block: int,
    chunk: int,
    block_rows: Dict[int, int],
    scratch_keys: int,
) -> Layout:
    """The launches for rows described by ``pieces``, checking every size limit first
    (ValueError). ``block_rows`` maps each BLOCK to its rows per program; long rows go in
    batches of at most ``scratch_keys`` keys (or one row). Pure: tests plan row shapes far
    beyond any memory with made-up addresses."""
    for _, _, rows, n, _ in pieces:
        if rows and n > MAX_ROW_LENGTH:
            raise ValueError(
                f"rows of {n:,} elements are too long for the triton backend: at most "
                f"{MAX_ROW_LENGTH:,} (2^31 - 1; columns are packed in 32 bits); use "
                f"backend='torch' for such tensors"
            )

    buckets: Dict[int, List[Piece]] = {}
    long_pieces: List[Piece] = []
    for piece in pieces:
        rows, n = piece[2], piece[3]
        if rows == 0 or n == 0:
            continue
        if n <= max_block:
            buckets.setdefault(max(MIN_BLOCK, 1 << (n - 1).bit_length()), []).append(piece)
        else:
            long_pieces.append(piece)

    blocks = []
    for block, bucket in sorted(buckets.items()):
        for part in _split_rows(bucket, LAUNCH_ROWS):
            rows = sum(p[2] for p in part)
            _check_programs(-(-rows // block_rows[block]), f"{rows:,} rows of <= {block}")
            blocks.append(BlockLaunch(block, part, rows))

    long_pieces.sort(key=lambda p: -p[3])  # stable: longest first, then call order
    batches = [_batch(part, chunk) for part in _split_keys(long_pieces, scratch_keys)]
    scratch = max((b.keys * b.buffers for b in batches), default=0)
    return Layout(blocks, batches, scratch)


def _split_rows(pieces: List[Piece], limit: int) -> List[List[Piece]]:
    """``pieces`` cut into consecutive parts of at most ``limit`` rows."""
    parts, part, rows = [], [], 0
    for wa, sa, count, n, rb in pieces:
        first = 0
        while first < count:
            take = min(count - first, limit - rows)
            part.append((wa + first * rb, sa + first * rb, take, n, rb))
            rows += take
            first += take
            if rows == limit:
                parts.append(part)
                part, rows = [], 0
    if part:
        parts.append(part)
    return parts


def _split_keys(pieces: List[Piece], cap: int) -> List[List[Piece]]:
    """Long rows cut into batches of at most ``cap`` scratch keys, one row at least; a row
    never straddles two batches."""
    parts, part, keys = [], [], 0
    for wa, sa, count, n, rb in pieces:
        seg = _segment(n)
        first = 0
        while first < count:
            room = (cap - keys) // seg if part else max(1, cap // seg)
            if room <= 0:
                parts.append(part)
                part, keys = [], 0
                continue
            take = min(count - first, room)
            part.append((wa + first * rb, sa + first * rb, take, n, rb))
            keys += take * seg
            first += take
    if part:
        parts.append(part)
    return parts


def _batch(pieces: List[Piece], chunk: int) -> Batch:
    keys = sum(rows * _segment(n) for _, _, rows, n, _ in pieces)
    programs = [0] * _passes(pieces[0][3], chunk)  # the first row is the longest
    for _, _, rows, n, _ in pieces:
        for p in range(_passes(n, chunk)):
            programs[p] += rows * _chunks(n, chunk)
    _check_programs(programs[0], f"a batch of {sum(p[2] for p in pieces):,} long rows")
    return Batch(pieces, keys, programs)
