// The checks of every operator's (weight, sorted init) pairs, and their rows (tensor_pairs.h).
#include "tensor_pairs.h"

#include <c10/util/Exception.h>

namespace laperm {

RowShape rows_and_length(const at::Tensor& t) {
  if (t.dim() == 1) return {1, t.numel()};
  const int64_t rows = t.size(0);
  return {rows, rows == 0 ? 0 : t.numel() / rows};
}

bool is_supported_dtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
    case at::kDouble:
    case at::kHalf:
    case at::kBFloat16:
      return true;
    default:
      return false;
  }
}

void check_supported_dtype(at::ScalarType dtype, const std::string& what) {
  TORCH_CHECK_TYPE(is_supported_dtype(dtype), what, " has dtype ", dtype,
                   "; rank matching needs float32, float64, float16 or bfloat16");
}

void check_pairs(const char* op, at::TensorList weights, at::TensorList sorted_inits) {
  TORCH_CHECK_VALUE(weights.size() == sorted_inits.size(), op, ": got ", weights.size(),
                    " weights but ", sorted_inits.size(), " sorted_inits");
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    const at::Tensor& s = sorted_inits[i];
    TORCH_CHECK_VALUE(w.dim() >= 1, op, ": weights[", i, "] is 0-d");
    check_supported_dtype(w.scalar_type(),
                          std::string(op) + ": weights[" + std::to_string(i) + "]");
    TORCH_CHECK_TYPE(s.scalar_type() == w.scalar_type(), op, ": sorted_inits[", i,
                     "] has dtype ", s.scalar_type(), " but weights[", i, "] has ",
                     w.scalar_type());
    TORCH_CHECK_VALUE(s.device() == w.device(), op, ": sorted_inits[", i, "] is on ",
                      s.device(), " but weights[", i, "] is on ", w.device());
    TORCH_CHECK_VALUE(s.sizes() == w.sizes(), op, ": sorted_inits[", i, "] has shape ",
                      s.sizes(), " but weights[", i, "] has ", w.sizes());
    TORCH_CHECK_VALUE(w.is_contiguous() && s.is_contiguous(), op, ": weights[", i,
                      "] and sorted_inits[", i, "] must be contiguous");
  }
}

}  // namespace laperm
