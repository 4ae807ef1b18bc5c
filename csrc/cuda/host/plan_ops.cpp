// The CUDA backend's plan as operators, registered in every build and for any device, so
// that the planning the kernels depend on is tested on the CPU with CPU (or meta) tensors
// standing in:
//   laperm::cuda_row_plan           a group's plan (host words and device tables)
//   laperm::cuda_largest_block_tile the largest tile a device's shared memory allows
//   laperm::cuda_size_classes       size_classes.h's constants: Python reads them here
// and the CPU kernel of laperm::rank_match_planned_, which only says that the op runs the
// CUDA kernels (tests run plans on the CPU through laperm_testing::emulate_planned_).
// The plan's inspection ops (its word layout, a plan decoded) are laperm_testing's
// (testing/inspection.cpp).
#include <torch/library.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/host/plan.h"
#include "cuda/host/plan_tensors.h"
#include "cuda/host/tensor_group.h"

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

using SizeClasses = std::tuple<int64_t, std::vector<int64_t>, std::vector<int64_t>,
                               std::vector<int64_t>, int64_t, int64_t, int64_t, int64_t,
                               int64_t, int64_t>;
SizeClasses cuda_size_classes() {
  std::vector<int64_t> tiles, threads, items;
  for (const BlockTile& t : kBlockTiles) {
    tiles.push_back(t.tile);
    threads.push_back(t.threads);
    items.push_back(t.items);
  }
  // In the schema's order (csrc/laperm.cpp), which names every field for Python.
  return {kWarpMaxLength, tiles, threads, items, kDefaultBatchItems, kMaxBatchItems,
          kMaxBatchRows, kDeviceSortMinLength, kMaxWarpClassRows, kMaxBlockClassRows};
}

void rank_match_planned_cpu(at::TensorList weights, at::TensorList sorted_inits,
                            const at::Tensor& plan, const at::Tensor& rows,
                            const at::Tensor& segment_offsets,
                            const std::optional<at::Tensor>& scratch) {
  TORCH_CHECK_VALUE(false, "laperm::rank_match_planned_ runs the CUDA kernels: weights must "
                    "be CUDA tensors, got CPU tensors (laperm::rank_match_many_ takes CPU "
                    "tensors)");
}

#ifndef LAPERM_WITH_CUDA
at::Tensor cuda_plan_scratch_unbuilt(const at::Tensor& plan, c10::Device device) {
  TORCH_CHECK(false, "laperm::cuda_plan_scratch: this build of laperm_kernels._C has no CUDA "
              "kernels (it was built against a CPU torch)");
}
#endif

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CPU, m) {
  m.impl("rank_match_planned_", &rank_match_planned_cpu);
#ifndef LAPERM_WITH_CUDA
  m.impl("cuda_plan_scratch", &cuda_plan_scratch_unbuilt);  // rank_match_cuda.cpp's otherwise
#endif
}

TORCH_LIBRARY_IMPL(laperm, CompositeExplicitAutograd, m) {
  m.impl("cuda_row_plan", cuda_row_plan);
  m.impl("cuda_largest_block_tile", cuda_largest_block_tile);
  m.impl("cuda_size_classes", cuda_size_classes);
}

}  // namespace cuda
}  // namespace laperm
