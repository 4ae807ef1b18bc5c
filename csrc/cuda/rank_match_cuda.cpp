// The CUDA kernels of laperm::rank_match_planned_ and laperm::rank_match_many_: checks,
// device guard, current stream, then the plan run (host/plan_runner.h) through the CUDA
// launcher, which allocates the scratch and makes the launches of kernels.h. Built only
// when the installed torch is a CUDA build (setup.py).
//
// rank_match_planned_ is the fast path: the caller (laperm_kernels/backends/cuda.py,
// hence the LaPerm optimizer) caches the plan and its device tables, so a sync is a few
// host checks and one launch per size class, with nothing allocated and nothing
// synchronised unless the model has rows longer than the largest block tile (their
// scratch comes from PyTorch's caching allocator, which CUDA graph capture supports, and
// is allocated before the first launch, so running out of memory changes no weight).
// rank_match_many_ plans and uploads the tables on every call (host work, then an
// asynchronous copy from pinned memory), for direct callers of torch.ops.laperm.rank_match_many_.
#include <ATen/ATen.h>
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

class CudaLauncher final : public PlanLauncher {
 public:
  CudaLauncher(ElementType type, const at::Tensor& like, cudaStream_t stream)
      : type_(type), like_(like), stream_(stream) {}

  // The large rows' scratch, before any launch: running out of memory leaves every weight
  // unchanged. Stream-ordered on the current stream by the caching allocator: no sync.
  void prepare(const LaunchBounds& bounds) override {
    ScratchCounter counter;
    if (bounds.max_batch_items == 0) return;
    size_t bytes = 0;  // CUB's temporary storage grows with items and segments
    check_cuda(large_rows_scratch_bytes(type_, bounds.max_batch_items, bounds.max_batch_rows,
                                        &bytes),
               "sizing the large-row scratch");
    try {
      if (counter.next_fails()) throw_out_of_memory("injected by laperm::_test_fail_allocation");
      scratch_ = at::empty({static_cast<int64_t>(bytes)}, like_.options().dtype(at::kByte));
    } catch (const c10::OutOfMemoryError& e) {
      throw_out_of_memory(
          "laperm cuda backend: out of memory for the large rows' scratch: " +
          format_bytes(static_cast<int64_t>(bytes)) + " for batches of up to " +
          std::to_string(bounds.max_batch_items) + " elements (the longest row has " +
          std::to_string(bounds.max_large_length) + "). No weight was modified. Free GPU "
          "memory, or plan with a smaller max_batch_items (a longer row is a batch alone). "
          "The allocator said: " + e.msg());
    }
    scratch_bytes_ = bytes;
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
         const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
  CudaLauncher launcher(plan.type, like, stream);
  run_plan(plan, reinterpret_cast<const RowDesc*>(rows.data_ptr<int64_t>()),
           segment_offsets.numel() ? segment_offsets.data_ptr<int32_t>() : nullptr, launcher);
}

void rank_match_planned_cuda(at::TensorList weights, at::TensorList sorted_inits,
                             const at::Tensor& plan, const at::Tensor& rows,
                             const at::Tensor& segment_offsets) {
  const char* op = "laperm::rank_match_planned_";
  const ElementType type = check_cuda_group(op, weights, sorted_inits);
  const DecodedPlan decoded =
      check_plan(op, type, weights, sorted_inits, plan, rows, segment_offsets);
  run(decoded.plan, rows, segment_offsets, weights[0]);
}

void rank_match_many_cuda(at::TensorList weights, at::TensorList sorted_inits) {
  const char* op = "laperm::rank_match_many_";
  const ElementType type = check_cuda_group(op, weights, sorted_inits);
  const c10::cuda::CUDAGuard guard(weights[0].device());
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
  // A blocking upload (pageable memory): this path is not for graph capture.
  const auto tables = plan_to_tensors(plan, weights[0].device());
  run(plan, std::get<1>(tables), std::get<2>(tables), weights[0]);
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CUDA, m) {
  m.impl("rank_match_many_", &rank_match_many_cuda);
  m.impl("rank_match_planned_", &rank_match_planned_cuda);
}

}  // namespace cuda
}  // namespace laperm
