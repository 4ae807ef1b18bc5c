// laperm::cuda_row_plan and laperm::cuda_largest_block_tile: the CUDA backend's host
// dispatch (row_plan.h) as operators. Registered in every build, for any device, so the
// planning the kernels depend on is tested on the CPU with CPU tensors standing in.
#include <torch/library.h>

#include <stdexcept>

#include "cuda/host/row_plan.h"
#include "cuda/host/tensor_rows.h"

namespace laperm {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_row_plan(
    at::TensorList weights, at::TensorList sorted_inits, int64_t max_block_tile,
    int64_t max_batch_items) {
  const ElementType type = check_group("cuda_row_plan", weights, sorted_inits);
  RowPlan plan;
  try {
    plan = plan_rows(type, describe_rows(weights, sorted_inits),
                     PlanLimits{max_block_tile, max_batch_items});
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, "cuda_row_plan: ", e.what());
  }
  return plan_to_tensors(plan, weights[0].device());
}

int64_t cuda_largest_block_tile(at::ScalarType dtype, int64_t smem_optin_bytes) {
  return largest_block_tile(element_type_of(dtype, "dtype"), smem_optin_bytes);
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CompositeExplicitAutograd, m) {
  m.impl("cuda_row_plan", cuda_row_plan);
  m.impl("cuda_largest_block_tile", cuda_largest_block_tile);
}

}  // namespace cuda
}  // namespace laperm
