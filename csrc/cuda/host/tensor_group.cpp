// A group of torch tensors as the planner's TensorRows (tensor_group.h).
#include "cuda/host/tensor_group.h"

#include <c10/util/Exception.h>

namespace laperm {
namespace cuda {

ElementType element_type_of(at::ScalarType dtype, const char* arg) {
  switch (dtype) {
    case at::kFloat: return ElementType::kFloat32;
    case at::kDouble: return ElementType::kFloat64;
    case at::kHalf: return ElementType::kFloat16;
    case at::kBFloat16: return ElementType::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, arg, " has dtype ", dtype, "; rank matching needs float32, "
                       "float64, float16 or bfloat16");
  }
}

ElementType check_group(const char* op, at::TensorList weights, at::TensorList sorted_inits) {
  TORCH_CHECK_VALUE(weights.size() == sorted_inits.size(), op, ": got ", weights.size(),
                    " weights but ", sorted_inits.size(), " sorted_inits");
  TORCH_CHECK_VALUE(!weights.empty(), op, ": weights is empty; a group needs at least one "
                    "tensor (its dtype and device choose the kernels)");
  const at::Tensor& first = weights[0];
  const ElementType type = element_type_of(first.scalar_type(), "weights[0]");
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    const at::Tensor& s = sorted_inits[i];
    TORCH_CHECK_VALUE(w.dim() >= 1, op, ": weights[", i, "] is 0-d");
    TORCH_CHECK_TYPE(w.scalar_type() == first.scalar_type() &&
                         s.scalar_type() == first.scalar_type(),
                     op, ": weights[", i, "] and sorted_inits[", i, "] must have weights[0]'s "
                     "dtype ", first.scalar_type(), ", got ", w.scalar_type(), " and ",
                     s.scalar_type());
    TORCH_CHECK_VALUE(w.device() == first.device() && s.device() == first.device(), op,
                      ": weights[", i, "] and sorted_inits[", i, "] must be on weights[0]'s "
                      "device ", first.device(), ", got ", w.device(), " and ", s.device());
    TORCH_CHECK_VALUE(s.sizes() == w.sizes(), op, ": sorted_inits[", i, "] has shape ",
                      s.sizes(), " but weights[", i, "] has ", w.sizes());
    TORCH_CHECK_VALUE(w.is_contiguous() && s.is_contiguous(), op, ": weights[", i,
                      "] and sorted_inits[", i, "] must be contiguous");
  }
  return type;
}

std::vector<TensorRows> describe_rows(at::TensorList weights, at::TensorList sorted_inits) {
  std::vector<TensorRows> out;
  out.reserve(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    const int64_t rows = w.dim() == 1 ? 1 : w.size(0);  // a 1-D tensor is one row
    const int64_t length = rows == 0 ? 0 : w.numel() / rows;
    out.push_back({reinterpret_cast<int64_t>(w.data_ptr()),
                   reinterpret_cast<int64_t>(sorted_inits[i].data_ptr()), rows, length});
  }
  return out;
}

}  // namespace cuda
}  // namespace laperm
