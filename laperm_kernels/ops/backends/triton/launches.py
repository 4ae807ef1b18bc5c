"""The launches of a Triton plan: its row tables on the device, and each kernel's
launch (a closure over the tables, run with the call's dtype kind and scratch)."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .layout import SEGMENT_KEYS, Batch, Piece


def row_table(pieces: List[Piece], device) -> Tuple[torch.Tensor, ...]:
    """(W address, S address, length) of every row of ``pieces``, on ``device``."""
    w_addr, s_addr, lengths = [], [], []
    for wa, sa, rows, n, row_bytes in pieces:
        step = torch.arange(rows, dtype=torch.int64) * row_bytes
        w_addr.append(wa + step)
        s_addr.append(sa + step)
        lengths.append(torch.full((rows,), n, dtype=torch.int32))
    return tuple(_upload(torch.cat(t), device) for t in (w_addr, s_addr, lengths))


def _upload(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host table on ``device``. For CUDA, an asynchronous copy from pinned memory (one
    from pageable memory would make the host wait for the stream); the caching host
    allocator keeps the pinned buffer until the copy has run."""
    if device.type != "cuda":
        return table.to(device)
    return table.pin_memory().to(device, non_blocking=True)


def block_launch(tk, block: int, w_tab, s_tab, lengths):
    rows_per_program, warps = tk.BLOCK_CONFIGS[block]
    num_rows = lengths.numel()
    grid = (-(-num_rows // rows_per_program),)

    def launch(kind: int, scratch, warmup: bool = False) -> None:
        _launch(
            tk.rank_match_block_kernel,
            grid,
            warmup,
            w_tab,
            s_tab,
            lengths,
            num_rows,
            KIND=kind,
            BLOCK=block,
            ROWS=rows_per_program,
            num_warps=warps,
        )

    return launch


def _launch(kernel, grid, warmup: bool, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, or with ``warmup`` its compilation and the load
    of its binary onto the device, which Triton otherwise defers to the first launch
    (both no-ops under the interpreter)."""
    if not warmup:
        kernel[grid](*args, **kwargs)
        return
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    load = getattr(compiled, "_init_handles", None)
    if load is not None:
        load()  # raises here, not at the launch, if the device cannot run the binary


def merge_sort_launch(tk, batch: Batch, chunk: int, device, tables: List[torch.Tensor]):
    """The launches of one batch of long rows: sort its chunks into scratch, then merge
    runs of chunk, 2 chunk, ... keys; the last pass of each row scatters S into W."""
    w_tab, s_tab, lengths = row_table(batch.pieces, device)
    length = torch.cat(
        [torch.full((rows,), n, dtype=torch.int64) for _, _, rows, n, _ in batch.pieces]
    )
    segments = -(-length // SEGMENT_KEYS) * SEGMENT_KEYS
    key_offsets = _upload(segments.cumsum(0) - segments, device)
    chunks = -(-length // chunk)  # tiles (= chunks) of each row
    tile_row = torch.repeat_interleave(torch.arange(length.numel()), chunks)
    first_tile = chunks.cumsum(0) - chunks
    tile_start = (torch.arange(tile_row.numel()) - first_tile[tile_row]) * chunk
    tile_row = _upload(tile_row.to(torch.int32), device)
    tile_start = _upload(tile_start.to(torch.int32), device)
    tables.extend((w_tab, s_tab, lengths, key_offsets, tile_row, tile_start))

    keys, buffers, programs = batch.keys, batch.buffers, batch.programs
    sort_warps = tk.BLOCK_CONFIGS.get(chunk, (1, tk.SORT_WARPS))[1]
    log2_chunk = chunk.bit_length() - 1

    def launch(kind: int, scratch: Optional[torch.Tensor], warmup: bool = False) -> None:
        if scratch is None:  # warm-up: any int64 tensor aligned as the views are will do
            scratch = torch.empty(2 * SEGMENT_KEYS, dtype=torch.int64, device=device)
            keys_ = SEGMENT_KEYS
        else:
            keys_ = keys
        # Two views of the one scratch (keys is a multiple of 16: both 128-byte aligned).
        runs = (scratch[:keys_], scratch[keys_ : 2 * keys_] if buffers == 2 else scratch[:keys_])
        _launch(
            tk.sort_chunks_kernel,
            (programs[0],),
            warmup,
            w_tab,
            lengths,
            key_offsets,
            tile_row,
            tile_start,
            runs[0],
            KIND=kind,
            CHUNK=chunk,
            num_warps=sort_warps,
        )
        for p, grid in enumerate(programs):
            _launch(
                tk.merge_runs_kernel,
                (grid,),
                warmup,
                w_tab,
                s_tab,
                lengths,
                key_offsets,
                tile_row,
                tile_start,
                runs[p % 2],
                runs[1 - p % 2],
                chunk << p,
                KIND=kind,
                CHUNK=chunk,
                LOG2_CHUNK=log2_chunk,
                num_warps=tk.MERGE_WARPS,
            )

    return launch
