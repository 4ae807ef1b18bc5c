// The CUDA kernels' host API: launchers over tables of row descriptors (row_desc.h), one
// launcher per size class (size_classes.h), each taking the ElementType of its rows.
//
// Plain C++ over the CUDA runtime, with no torch types, so that the .cu files compile
// standalone (CI compile-checks them without a CUDA torch) and the torch glue
// (rank_match_cuda.cpp) stays a thin layer that only checks, plans and allocates.
//
// Every launcher enqueues on `stream` and returns the launch's error; none allocates,
// none synchronises with the host, so they can be captured in a CUDA graph. `rows` points
// to device memory holding `num_rows` descriptors of one size class and one dtype.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/element_type.h"
#include "cuda/row_desc.h"
#include "cuda/size_classes.h"

namespace laperm {
namespace cuda {

// Rows of at most kWarpMaxLength elements, one warp each.
cudaError_t launch_warp_rows(ElementType type, const RowDesc* rows, int64_t num_rows,
                             cudaStream_t stream);

// Rows of at most kBlockTiles[tile_index].tile elements, one block each.
cudaError_t launch_block_rows(ElementType type, int tile_index, const RowDesc* rows,
                              int64_t num_rows, cudaStream_t stream);

// Exact dynamic shared memory the block kernel of (type, tile_index) launches with.
int64_t block_rows_smem_bytes(ElementType type, int tile_index);

// Scratch for one batch of large rows: double-buffered keys and columns, then CUB's
// temporary storage. Asks CUB (no launch, no sync).
cudaError_t large_rows_scratch_bytes(ElementType type, int64_t items, int64_t num_rows,
                                     size_t* bytes);

// One batch of large rows: gathers (key, column) pairs into `scratch`, sorts every row's
// segment with cub::DeviceSegmentedRadixSort (a batch that is one row of >=
// kDeviceSortMinLength: cub::DeviceRadixSort), scatters W[column] = S[rank].
// `segment_offsets` (device, num_rows + 1 ints) are the rows' scratch_offset values
// followed by `items`; `max_length` is the longest row of the batch.
cudaError_t launch_large_rows(ElementType type, const RowDesc* rows, int64_t num_rows,
                              int64_t max_length, const int32_t* segment_offsets,
                              int64_t items, void* scratch, size_t scratch_bytes,
                              cudaStream_t stream);

}  // namespace cuda
}  // namespace laperm
