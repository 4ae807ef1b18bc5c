// A group of torch tensors as the planner's TensorRows (tensor_group.h).
#include "cuda/host/tensor_group.h"

#include <c10/util/Exception.h>

#include "tensor_pairs.h"

namespace laperm {
namespace cuda {

ElementType element_type_of(at::ScalarType dtype, const char* arg) {
  check_supported_dtype(dtype, arg);
  switch (dtype) {
    case at::kFloat: return ElementType::kFloat32;
    case at::kDouble: return ElementType::kFloat64;
    case at::kHalf: return ElementType::kFloat16;
    case at::kBFloat16: return ElementType::kBFloat16;
    default: TORCH_INTERNAL_ASSERT(false, "unsupported dtype ", dtype);
  }
}

ElementType check_group(const char* op, at::TensorList weights, at::TensorList sorted_inits) {
  check_pairs(op, weights, sorted_inits);  // each pair, as every operator checks it
  TORCH_CHECK_VALUE(!weights.empty(), op, ": weights is empty; a group needs at least one "
                    "tensor (its dtype and device choose the kernels)");
  const at::Tensor& first = weights[0];
  for (size_t i = 1; i < weights.size(); ++i) {  // each sorted init is of its weight's
    const at::Tensor& w = weights[i];
    TORCH_CHECK_TYPE(w.scalar_type() == first.scalar_type(), op, ": weights[", i,
                     "] and sorted_inits[", i, "] must have weights[0]'s dtype ",
                     first.scalar_type(), ", got ", w.scalar_type());
    TORCH_CHECK_VALUE(w.device() == first.device(), op, ": weights[", i, "] and sorted_inits[",
                      i, "] must be on weights[0]'s device ", first.device(), ", got ",
                      w.device());
  }
  return element_type_of(first.scalar_type(), "weights[0]");
}

std::vector<TensorRows> describe_rows(at::TensorList weights, at::TensorList sorted_inits) {
  std::vector<TensorRows> out;
  out.reserve(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    const RowShape shape = rows_and_length(w);
    out.push_back({reinterpret_cast<int64_t>(w.data_ptr()),
                   reinterpret_cast<int64_t>(sorted_inits[i].data_ptr()), shape.rows,
                   shape.length});
  }
  return out;
}

}  // namespace cuda
}  // namespace laperm
