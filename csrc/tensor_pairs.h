// The (weight, sorted init) pairs every rank-matching operator takes: one check of them for
// all the operators (the CPU kernel's laperm::rank_match_many_, the CUDA backend's plan and
// launch, the test-only emulation of its kernels), so the same bad input raises the same
// error type whichever operator gets it, and the rows as docs/contract.md defines them.
// Built in every build (setup.py's cpu_sources).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace laperm {

// A tensor's rows: reshape(shape[0], -1), a 1-D tensor being one row; a tensor of no
// rows has rows of length 0.
struct RowShape {
  int64_t rows;
  int64_t length;
};
RowShape rows_and_length(const at::Tensor& t);

// Whether rank matching takes `dtype`: float32, float64, float16 or bfloat16.
bool is_supported_dtype(at::ScalarType dtype);

// TypeError unless is_supported_dtype(dtype); the message starts with `what` (the
// argument, e.g. "weights[0]").
void check_supported_dtype(at::ScalarType dtype, const std::string& what);

// As many weights as sorted_inits, and for each pair i: weights[i] at least 1-D, of a
// supported dtype; sorted_inits[i] of weights[i]'s dtype, device and shape; both
// contiguous. A wrong dtype raises TypeError, anything else ValueError (the Python API's
// own checks raise the same types). `op` starts every message.
void check_pairs(const char* op, at::TensorList weights, at::TensorList sorted_inits);

}  // namespace laperm
