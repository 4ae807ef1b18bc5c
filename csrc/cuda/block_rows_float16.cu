// The block class's kernels for float16 rows, every tile (design: block_rows.cuh).
#include "cuda/block_rows.cuh"

namespace laperm {
namespace cuda {
LAPERM_INSTANTIATE_BLOCK_ROWS(Float16Format)
}  // namespace cuda
}  // namespace laperm
