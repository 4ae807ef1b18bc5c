// A plan as tensors, and the check before a run (plan_tensors.h).
#include "cuda/host/plan_tensors.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "cuda/host/tensor_group.h"

namespace laperm {
namespace cuda {
namespace {

// A host table on `device`. For a CUDA device the copy is asynchronous, from pinned
// memory: one from pageable memory would make the host wait for the stream. The caching
// host allocator keeps the pinned buffer until the copy has run.
at::Tensor upload(const at::Tensor& host, c10::Device device) {
  if (!device.is_cuda()) return host.to(device);
  return host.pin_memory().to(host.options().device(device), /*non_blocking=*/true);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> plan_to_tensors(const RowPlan& plan,
                                                               c10::Device device) {
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const std::vector<int64_t> words = encode_plan(plan);
  at::Tensor host = at::empty({static_cast<int64_t>(words.size())}, i64);
  std::copy(words.begin(), words.end(), host.data_ptr<int64_t>());
  at::Tensor rows = at::empty({static_cast<int64_t>(plan.rows.size()), kRowDescWords}, i64);
  std::memcpy(rows.data_ptr(), plan.rows.data(), plan.rows.size() * sizeof(RowDesc));
  at::Tensor offsets = at::empty({static_cast<int64_t>(plan.segment_offsets.size())},
                                 at::TensorOptions().dtype(at::kInt));
  std::copy(plan.segment_offsets.begin(), plan.segment_offsets.end(),
            offsets.data_ptr<int32_t>());
  return {host, upload(rows, device), upload(offsets, device)};
}

DecodedPlan decode_plan_tensor(const char* op, const at::Tensor& plan) {
  TORCH_CHECK_VALUE(plan.device().is_cpu() && plan.scalar_type() == at::kLong &&
                        plan.dim() == 1 && plan.is_contiguous(),
                    op, ": plan must be the 1-D int64 CPU tensor made by cuda_row_plan");
  try {
    return decode_plan(plan.data_ptr<int64_t>(), plan.numel());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, op, ": plan: ", e.what());
  }
}

DecodedPlan check_plan(const char* op, ElementType type, at::TensorList weights,
                       at::TensorList sorted_inits, const at::Tensor& plan,
                       const at::Tensor& rows, const at::Tensor& segment_offsets) {
  DecodedPlan decoded = decode_plan_tensor(op, plan);
  const std::vector<TensorRows> actual = describe_rows(weights, sorted_inits);
  const std::vector<TensorRows>& planned = decoded.plan.tensors;
  bool same = decoded.plan.type == type && planned.size() == actual.size();
  for (size_t i = 0; same && i < actual.size(); ++i)
    same = planned[i].w_addr == actual[i].w_addr && planned[i].s_addr == actual[i].s_addr &&
           planned[i].rows == actual[i].rows && planned[i].length == actual[i].length;
  TORCH_CHECK_VALUE(same, op, ": plan was made for other tensors (their dtype, addresses "
                    "or shapes differ); make a new one with laperm::cuda_row_plan");
  const auto device = weights[0].device();
  TORCH_CHECK_VALUE(rows.device() == device && rows.scalar_type() == at::kLong &&
                        rows.is_contiguous() &&
                        rows.numel() == kRowDescWords * decoded.num_rows,
                    op, ": rows must be the plan's int64 row table (", decoded.num_rows,
                    " x ", kRowDescWords, ") on ", device);
  TORCH_CHECK_VALUE(segment_offsets.device() == device &&
                        segment_offsets.scalar_type() == at::kInt &&
                        segment_offsets.is_contiguous() &&
                        segment_offsets.numel() == decoded.num_offsets,
                    op, ": segment_offsets must be the plan's int32 table (",
                    decoded.num_offsets, " entries) on ", device);
  return decoded;
}

}  // namespace cuda
}  // namespace laperm
