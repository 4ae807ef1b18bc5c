// The block class's entry points: dtype dispatch to block_rows_<dtype>.cu (design:
// block_rows.cuh). Host code only, so it includes no CUB.
#include "cuda/kernels.h"

namespace laperm {
namespace cuda {

// Defined, one per dtype, in block_rows_<dtype>.cu.
#define LAPERM_DECLARE_BLOCK_ROWS(name)                                                  \
  cudaError_t launch_block_rows_##name(int tile_index, const RowDesc* rows,              \
                                       int64_t num_rows, cudaStream_t stream);           \
  int64_t block_rows_smem_bytes_##name(int tile_index);
LAPERM_DECLARE_BLOCK_ROWS(float32)
LAPERM_DECLARE_BLOCK_ROWS(float64)
LAPERM_DECLARE_BLOCK_ROWS(float16)
LAPERM_DECLARE_BLOCK_ROWS(bfloat16)
#undef LAPERM_DECLARE_BLOCK_ROWS


cudaError_t launch_block_rows(ElementType type, int tile_index, const RowDesc* rows,
                              int64_t num_rows, cudaStream_t stream) {
  switch (type) {
    case ElementType::kFloat32: return launch_block_rows_float32(tile_index, rows, num_rows, stream);
    case ElementType::kFloat64: return launch_block_rows_float64(tile_index, rows, num_rows, stream);
    case ElementType::kFloat16: return launch_block_rows_float16(tile_index, rows, num_rows, stream);
    case ElementType::kBFloat16: return launch_block_rows_bfloat16(tile_index, rows, num_rows, stream);
  }
  return cudaErrorInvalidValue;
}

int64_t block_rows_smem_bytes(ElementType type, int tile_index) {
  switch (type) {
    case ElementType::kFloat32: return block_rows_smem_bytes_float32(tile_index);
    case ElementType::kFloat64: return block_rows_smem_bytes_float64(tile_index);
    case ElementType::kFloat16: return block_rows_smem_bytes_float16(tile_index);
    case ElementType::kBFloat16: return block_rows_smem_bytes_bfloat16(tile_index);
  }
  return -1;
}

}  // namespace cuda
}  // namespace laperm
