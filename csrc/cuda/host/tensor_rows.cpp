#include "cuda/host/tensor_rows.h"

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

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

std::tuple<at::Tensor, at::Tensor, at::Tensor> plan_to_tensors(const RowPlan& plan,
                                                               c10::Device device) {
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const std::vector<int64_t> words = encode_plan(plan);
  at::Tensor host = at::empty({static_cast<int64_t>(words.size())}, i64);
  std::copy(words.begin(), words.end(), host.data_ptr<int64_t>());
  at::Tensor rows = at::empty({static_cast<int64_t>(plan.rows.size()), 4}, i64);
  std::memcpy(rows.data_ptr(), plan.rows.data(), plan.rows.size() * sizeof(RowDesc));
  at::Tensor offsets = at::empty({static_cast<int64_t>(plan.segment_offsets.size())},
                                 at::TensorOptions().dtype(at::kInt));
  std::copy(plan.segment_offsets.begin(), plan.segment_offsets.end(),
            offsets.data_ptr<int32_t>());
  return {host, rows.to(device), offsets.to(device)};
}

DecodedPlan check_plan(const char* op, ElementType type, at::TensorList weights,
                       at::TensorList sorted_inits, const at::Tensor& plan,
                       const at::Tensor& rows, const at::Tensor& segment_offsets) {
  TORCH_CHECK_VALUE(plan.device().is_cpu() && plan.scalar_type() == at::kLong &&
                        plan.dim() == 1 && plan.is_contiguous(),
                    op, ": plan must be the 1-D int64 CPU tensor made by cuda_row_plan");
  DecodedPlan decoded;
  try {
    decoded = decode_plan(plan.data_ptr<int64_t>(), plan.numel());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, op, ": plan: ", e.what());
  }
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
                        rows.is_contiguous() && rows.numel() == 4 * decoded.num_rows,
                    op, ": rows must be the plan's int64 row table (", decoded.num_rows,
                    " x 4) on ", device);
  TORCH_CHECK_VALUE(segment_offsets.device() == device &&
                        segment_offsets.scalar_type() == at::kInt &&
                        segment_offsets.is_contiguous() &&
                        segment_offsets.numel() == decoded.num_offsets,
                    op, ": segment_offsets must be the plan's int32 table (",
                    decoded.num_offsets, " entries) on ", device);
  return decoded;
}

LaunchBounds launch_bounds(const RowPlan& plan) {
  LaunchBounds b;
  for (const ClassLaunch& l : plan.launches)
    if (l.tile_index != kWarpClass)
      b.max_tile = std::max(b.max_tile, kBlockTiles[l.tile_index].tile);
  for (const LargeBatch& batch : plan.batches) {
    b.max_batch_items = std::max(b.max_batch_items, batch.items);
    b.max_batch_rows = std::max(b.max_batch_rows, batch.row_count);
    b.max_large_length = std::max(b.max_large_length, batch.max_length);
  }
  return b;
}

void run_plan(const RowPlan& plan, const RowDesc* rows, const int32_t* segment_offsets,
              PlanLauncher& launcher) {
  launcher.prepare(launch_bounds(plan));
  for (const ClassLaunch& l : plan.launches) {
    if (l.tile_index == kWarpClass)
      launcher.warp_rows(rows + l.row_begin, l.row_count);
    else
      launcher.block_rows(l.tile_index, rows + l.row_begin, l.row_count);
  }
  for (const LargeBatch& b : plan.batches)
    launcher.large_rows(b, rows + b.row_begin, segment_offsets + b.offsets_begin);
}

}  // namespace cuda
}  // namespace laperm
