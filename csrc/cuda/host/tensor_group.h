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

// Checks one group: the pairs as every operator checks them (check_pairs, tensor_pairs.h:
// as many weights as sorted_inits, each pair 1-D or more, contiguous, of one supported
// dtype, device and shape), at least one pair, and all of weights[0]'s dtype (else
// TypeError) and device (else ValueError). Returns the group's element type. `op`
// prefixes every message.
ElementType check_group(const char* op, at::TensorList weights, at::TensorList sorted_inits);

// Rows (rows_and_length, tensor_pairs.h) and addresses of every (weight, sorted init) pair.
std::vector<TensorRows> describe_rows(at::TensorList weights, at::TensorList sorted_inits);

}  // namespace cuda
}  // namespace laperm
