// The block class's entry points: dtype dispatch to the instantiations in
// block_rows_<dtype>.cu (design: block_rows.cuh). Host code only, so it includes no CUB.
#include "cuda/block_rows.h"
#include "cuda/kernels.h"

namespace laperm {
namespace cuda {

cudaError_t launch_block_rows(ElementType type, int tile_index, const RowDesc* rows,
                              int64_t num_rows, cudaStream_t stream) {
  return dispatch_element_type(type, cudaErrorInvalidValue, [&](auto format) {
    return launch_block_rows_of<decltype(format)>(tile_index, rows, num_rows, stream);
  });
}

int64_t block_rows_smem_bytes(ElementType type, int tile_index) {
  return dispatch_element_type(type, int64_t(-1), [&](auto format) {
    return block_rows_smem_bytes_of<decltype(format)>(tile_index);
  });
}

}  // namespace cuda
}  // namespace laperm
