// The CPU kernel's entry point, for the ops that run it besides laperm::rank_match_many_
// (call_check.cpp's fast path).
#pragma once

#include <ATen/core/Tensor.h>

namespace laperm {
namespace cpu {

// laperm::rank_match_many_ on CPU tensors: checks what the kernel needs (CPU, contiguous,
// matching dtypes and shapes, row length), allocates all scratch, then rank-matches every
// row in place. Throws before writing anything.
void rank_match_many_cpu(at::TensorList weights, at::TensorList sorted_inits);

}  // namespace cpu
}  // namespace laperm
