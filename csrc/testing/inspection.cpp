// Kernels of the inspection ops of laperm_testing (library.cpp): the constants of the
// CPU kernel and of the plan's encoding, and a plan's host words decoded. They read what
// cpu/row_kernel.h, cuda/host/plan_encoding.h and plan_tensors.h define; nothing here
// decodes on its own.
#include <torch/library.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>

#include "cpu/row_kernel.h"
#include "cuda/host/plan.h"
#include "cuda/host/plan_encoding.h"
#include "cuda/host/plan_tensors.h"

namespace laperm {
namespace {

std::tuple<int64_t, int64_t> cpu_kernel_limits() {
  return {cpu::kMaxRowLength, cpu::kScratchBytesPerElement};
}

std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t> cuda_plan_layout() {
  return {cuda::kPlanMagic, cuda::kPlanHeaderWords, cuda::kTensorWords, cuda::kLaunchWords,
          cuda::kBatchWords};
}

// The next `count` records of `width` words of a checked plan, from word `at` on (the
// layout of plan_encoding.h), as a [count, width] int64 tensor; advances `at`.
at::Tensor records(const at::Tensor& words, int64_t& at, size_t count, int64_t width) {
  const int64_t n = static_cast<int64_t>(count);
  at::Tensor out = words.narrow(0, at, n * width).view({n, width}).clone();
  at += n * width;
  return out;
}

std::tuple<std::string, int64_t, int64_t, int64_t, at::Tensor, at::Tensor, at::Tensor>
cuda_decode_plan(const at::Tensor& plan) {
  // checks every word
  const cuda::DecodedPlan d = cuda::decode_plan_tensor("laperm_testing::cuda_decode_plan", plan);
  int64_t at = cuda::kPlanHeaderWords;
  at::Tensor tensors = records(plan, at, d.plan.tensors.size(), cuda::kTensorWords);
  at::Tensor launches = records(plan, at, d.plan.launches.size(), cuda::kLaunchWords);
  at::Tensor batches = records(plan, at, d.plan.batches.size(), cuda::kBatchWords);
  return {cuda::element_type_name(d.plan.type), d.num_rows, d.num_offsets,
          d.plan.max_batch_items, tensors, launches, batches};
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm_testing, CompositeExplicitAutograd, m) {
  m.impl("cpu_kernel_limits", cpu_kernel_limits);
  m.impl("cuda_plan_layout", cuda_plan_layout);
  m.impl("cuda_decode_plan", cuda_decode_plan);
}

}  // namespace laperm
