// The block class's kernels for float32 rows, every tile (design: block_rows.cuh).
#include "cuda/block_rows.cuh"

namespace laperm {
namespace cuda {
LAPERM_DEFINE_BLOCK_ROWS(float32, Float32Format)
}  // namespace cuda
}  // namespace laperm
