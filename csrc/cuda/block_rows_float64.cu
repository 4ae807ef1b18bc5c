// The block class's kernels for float64 rows, every tile (design: block_rows.cuh).
#include "cuda/block_rows.cuh"

namespace laperm {
namespace cuda {
LAPERM_DEFINE_BLOCK_ROWS(float64, Float64Format)
}  // namespace cuda
}  // namespace laperm
