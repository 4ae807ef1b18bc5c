// A plan as the tensors laperm::cuda_row_plan returns (host words, device tables), and the
// check that a plan handed back to a run was made for exactly the tensors it runs on.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "cuda/host/plan.h"
#include "cuda/host/plan_encoding.h"

namespace laperm {
namespace cuda {

// Its host words (CPU int64), then its row table ([rows, kRowDescWords] int64) and
// large-row segment offsets (int32), both on `device`.
std::tuple<at::Tensor, at::Tensor, at::Tensor> plan_to_tensors(const RowPlan& plan,
                                                               c10::Device device);

// Decodes `plan` (cuda_row_plan's host words) and checks that it was made for exactly
// these tensors (addresses and shapes) and that `rows` / `segment_offsets` are its tables
// on the tensors' device. A plan outlives nothing it describes: if a tensor moved, the
// caller must plan again; running a stale plan would write freed memory.
DecodedPlan check_plan(const char* op, ElementType type, at::TensorList weights,
                       at::TensorList sorted_inits, const at::Tensor& plan,
                       const at::Tensor& rows, const at::Tensor& segment_offsets);

// Decodes host words with no tensors to check them against (for inspection);
// `op` prefixes the error of a tensor that is not a plan.
DecodedPlan decode_plan_tensor(const char* op, const at::Tensor& plan);

}  // namespace cuda
}  // namespace laperm
