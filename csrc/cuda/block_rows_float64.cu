// The block class's kernels for float64 rows, every tile (design: block_rows.cuh).
#include "cuda/block_rows.cuh"

namespace laperm {
namespace cuda {
LAPERM_INSTANTIATE_BLOCK_ROWS(Float64Format)
}  // namespace cuda
}  // namespace laperm
