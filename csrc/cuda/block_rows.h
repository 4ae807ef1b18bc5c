// The block class's per-dtype entry points, declared without their definitions (which
// need CUB: block_rows.cuh) so that block_rows.cu dispatches to them without compiling any
// kernel. Each block_rows_<dtype>.cu instantiates both for its dtype.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/row_desc.h"

namespace laperm {
namespace cuda {

template <typename Format>
cudaError_t launch_block_rows_of(int tile_index, const RowDesc* rows, int64_t num_rows,
                                 cudaStream_t stream);

template <typename Format>
int64_t block_rows_smem_bytes_of(int tile_index);

}  // namespace cuda
}  // namespace laperm
