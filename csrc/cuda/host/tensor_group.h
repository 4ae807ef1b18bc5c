// A group of torch tensors (one dtype, one device) as the planner's TensorRows, with the
// checks every CUDA-backend operator makes first.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "cuda/host/plan.h"

namespace laperm {
namespace cuda {

// The kernels' element type of a torch dtype; a clear error naming `arg` otherwise.
ElementType element_type_of(at::ScalarType dtype, const char* arg);

// Checks one group: as many weights as sorted_inits (at least one), every tensor at least
// 1-D, contiguous, of weights[0]'s dtype and device, each sorted init shaped like its
// weight. Returns the group's element type. `op` prefixes every message.
ElementType check_group(const char* op, at::TensorList weights, at::TensorList sorted_inits);

// Rows (reshape(shape[0], -1)) and addresses of every (weight, sorted init) pair.
std::vector<TensorRows> describe_rows(at::TensorList weights, at::TensorList sorted_inits);

}  // namespace cuda
}  // namespace laperm
