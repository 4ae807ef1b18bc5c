// The CUDA kernels of laperm::rank_match_planned_, laperm::cuda_plan_scratch and
// laperm::rank_match_many_: checks, device guard, current stream, then the plan run
// (host/plan_runner.h) through the CUDA launcher, which makes the launches of kernels.h.
// Built only when the installed torch is a CUDA build (setup.py).
//
// rank_match_planned_ is the fast path: the caller (laperm_kernels/ops/backends/cuda.py,
// hence the LaPerm optimizer) caches the plan and its device tables, and allocates the
// large rows' scratch (cuda_plan_scratch) while it prepares every group of a call, before
// any group runs, so running out of memory changes no weight of any group. A sync is then
// a few host checks and one launch per size class, with nothing allocated and nothing
// synchronised. The scratch comes from PyTorch's caching allocator, which CUDA graph
// capture supports. Given no scratch, the op allocates it before its first launch.
// rank_match_many_ plans and uploads the tables on every call (host work, then an
// asynchronous copy from pinned memory), for direct callers of torch.ops.laperm.rank_match_many_;
// it refuses to run during graph capture.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "cuda/host/plan.h"
#include "cuda/host/plan_runner.h"
#include "cuda/host/plan_tensors.h"
#include "cuda/host/tensor_group.h"
#include "cuda/kernels.h"
#include "scratch.h"

namespace laperm {
namespace cuda {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "laperm cuda backend: ", what, ": ",
              cudaGetErrorString(err));
}

// Bytes of scratch the large rows of a plan with these bounds take (0: none).
size_t large_row_scratch_bytes(ElementType type, const LaunchBounds& bounds) {
  size_t bytes = 0;  // CUB's temporary storage grows with items and segments
  if (bounds.max_batch_items == 0) return bytes;
  check_cuda(large_rows_scratch_bytes(type, bounds.max_batch_items, bounds.max_batch_rows,
                                      &bytes),
             "sizing the large-row scratch");
  return bytes;
}

// The large rows' scratch of a plan with these bounds (an empty tensor when it has none),
// or torch.OutOfMemoryError saying how much. Stream-ordered on the current stream by the
// caching allocator: no sync.
at::Tensor allocate_large_row_scratch(ElementType type, const LaunchBounds& bounds,
                                      c10::Device device) {
  ScratchCounter counter;
  const auto bytes = static_cast<int64_t>(large_row_scratch_bytes(type, bounds));
  const auto options = at::TensorOptions().device(device).dtype(at::kByte);
  if (bytes == 0) return at::empty({0}, options);
  try {
    if (counter.next_fails()) throw_out_of_memory("injected by laperm_testing::fail_allocation");
    return at::empty({bytes}, options);
  } catch (const c10::OutOfMemoryError& e) {
    throw_out_of_memory(
        "laperm cuda backend: out of memory for the large rows' scratch: " +
        format_bytes(bytes) + " for batches of up to " +
        std::to_string(bounds.max_batch_items) + " elements (the longest row has " +
        std::to_string(bounds.max_large_length) + "). No weight was modified. Free GPU "
        "memory, or plan with a smaller max_batch_items (a longer row is a batch alone). "
        "The allocator said: " + e.msg());
  }
}

class CudaLauncher final : public PlanLauncher {
 public:
  // `scratch`: cuda_plan_scratch's tensor for this plan, or undefined to allocate it here.
  CudaLauncher(ElementType type, const at::Tensor& like, cudaStream_t stream,
               at::Tensor scratch)
      : type_(type), like_(like), stream_(stream), scratch_(std::move(scratch)) {}

  // The large rows' scratch, before any launch: running out of memory leaves every weight
  // unchanged.
  void prepare(const LaunchBounds& bounds) override {
    scratch_bytes_ = large_row_scratch_bytes(type_, bounds);
    if (!scratch_.defined()) {
      scratch_ = allocate_large_row_scratch(type_, bounds, like_.device());
      return;
    }
    TORCH_CHECK_VALUE(scratch_.device() == like_.device() &&
                          scratch_.scalar_type() == at::kByte && scratch_.is_contiguous() &&
                          scratch_.numel() >= static_cast<int64_t>(scratch_bytes_),
                      "laperm::rank_match_planned_: scratch must be the byte tensor "
                      "cuda_plan_scratch made for this plan (", scratch_bytes_,
                      " bytes on ", like_.device(), "), got ", scratch_.numel(), " ",
                      scratch_.scalar_type(), " on ", scratch_.device());
  }
  void warp_rows(const RowDesc* rows, int64_t count) override {
    check_cuda(launch_warp_rows(type_, rows, count, stream_), "warp-class launch");
  }
  void block_rows(int tile_index, const RowDesc* rows, int64_t count) override {
    check_cuda(launch_block_rows(type_, tile_index, rows, count, stream_),
               "block-class launch");
  }
  void large_rows(const LargeBatch& batch, const RowDesc* rows,
                  const int32_t* segment_offsets) override {
    check_cuda(launch_large_rows(type_, rows, batch.row_count, batch.max_length,
                                 segment_offsets, batch.items, scratch_.data_ptr(),
                                 scratch_bytes_, stream_),
               "large-class launch");
  }

 private:
  ElementType type_;
  const at::Tensor& like_;
  cudaStream_t stream_;
  at::Tensor scratch_;
  size_t scratch_bytes_ = 0;
};

ElementType check_cuda_group(const char* op, at::TensorList weights,
                             at::TensorList sorted_inits) {
  const ElementType type = check_group(op, weights, sorted_inits);
  TORCH_CHECK_VALUE(weights[0].is_cuda(), op, ": the tensors must be CUDA tensors, got ",
                    weights[0].device());
  return type;
}

void run(const RowPlan& plan, const at::Tensor& rows, const at::Tensor& segment_offsets,
         const at::Tensor& like, at::Tensor scratch) {
  const c10::cuda::CUDAGuard guard(like.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
  CudaLauncher launcher(plan.type, like, stream, std::move(scratch));
  run_plan(plan, reinterpret_cast<const RowDesc*>(rows.data_ptr<int64_t>()),
           segment_offsets.numel() ? segment_offsets.data_ptr<int32_t>() : nullptr, launcher);
}

void rank_match_planned_cuda(at::TensorList weights, at::TensorList sorted_inits,
                             const at::Tensor& plan, const at::Tensor& rows,
                             const at::Tensor& segment_offsets,
                             const std::optional<at::Tensor>& scratch) {
  const char* op = "laperm::rank_match_planned_";
  const ElementType type = check_cuda_group(op, weights, sorted_inits);
  const DecodedPlan decoded =
      check_plan(op, type, weights, sorted_inits, plan, rows, segment_offsets);
  run(decoded.plan, rows, segment_offsets, weights[0], scratch.value_or(at::Tensor()));
}

at::Tensor cuda_plan_scratch(const at::Tensor& plan, c10::Device device) {
  const char* op = "laperm::cuda_plan_scratch";
  TORCH_CHECK_VALUE(device.is_cuda(), op, ": device must be a CUDA device, got ", device);
  const DecodedPlan decoded = decode_plan_tensor(op, plan);
  const c10::cuda::CUDAGuard guard(device);
  return allocate_large_row_scratch(decoded.plan.type, launch_bounds(decoded.plan), device);
}

void rank_match_many_cuda(at::TensorList weights, at::TensorList sorted_inits) {
  const char* op = "laperm::rank_match_many_";
  const ElementType type = check_cuda_group(op, weights, sorted_inits);
  const c10::cuda::CUDAGuard guard(weights[0].device());
  // Its tables go up from a pinned buffer that returns to the host cache when the call
  // returns: a graph replaying the copy would read whatever the buffer holds by then.
  TORCH_CHECK(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
              op, ": cannot be captured in a CUDA graph: it plans and uploads its row tables "
              "at every call, from a host buffer the graph would read again at every replay "
              "after it was reused. In a capture, call laperm_kernels.rank_match_many_ "
              "(which keeps its plans: run it once outside the capture first), or "
              "rank_match_planned_ with a plan made by cuda_row_plan outside the capture. "
              "Nothing was modified.");
  int smem_optin = 0;
  check_cuda(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                    weights[0].device().index()),
             "querying shared memory per block");
  PlanLimits limits;
  limits.max_block_tile = largest_block_tile(type, smem_optin);
  RowPlan plan;
  try {
    plan = plan_rows(type, describe_rows(weights, sorted_inits), limits);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, op, ": ", e.what());
  }
  // An asynchronous upload from pinned memory (plan_tensors.cpp).
  const auto tables = plan_to_tensors(plan, weights[0].device());
  run(plan, std::get<1>(tables), std::get<2>(tables), weights[0], at::Tensor());
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CUDA, m) {
  m.impl("rank_match_many_", &rank_match_many_cuda);
  m.impl("rank_match_planned_", &rank_match_planned_cuda);
}

// The plan's host words are a CPU tensor: the dispatch key of cuda_plan_scratch.
TORCH_LIBRARY_IMPL(laperm, CPU, m) { m.impl("cuda_plan_scratch", &cuda_plan_scratch); }

}  // namespace cuda
}  // namespace laperm
