// laperm::max_abs's CPU kernel (max_abs.cpp), for the ops that compute it on the way.
#pragma once

#include <ATen/core/Tensor.h>

namespace laperm {

// max |x| of each CPU tensor, as a float64 tensor (NaN where one holds a NaN).
at::Tensor max_abs_cpu(at::TensorList tensors);

}  // namespace laperm
