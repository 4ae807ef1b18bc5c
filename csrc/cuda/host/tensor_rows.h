// Torch tensors to the planner's plain descriptions, with the checks every CUDA-backend
// operator makes first (shared by row_plan_op.cpp and the CUDA glue).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

#include "cuda/host/row_plan.h"

namespace laperm {
namespace cuda {

// The kernels' element type of a torch dtype; a clear error naming `arg` otherwise.
ElementType element_type_of(at::ScalarType dtype, const char* arg);

// Checks one group: as many weights as sorted_inits (at least one), every tensor at least
// 1-D, contiguous, of weights[0]'s dtype and device, each sorted init shaped like its
// weight. Returns the group's element type. `op` prefixes every message.
ElementType check_group(const char* op, at::TensorList weights, at::TensorList sorted_inits);

// Rows (reshape(shape[0], -1)) and addresses of every (weight, sorted init) pair.
std::vector<TensorRows> describe_rows(at::TensorList weights, at::TensorList sorted_inits);

// A plan as cuda_row_plan returns it: its host words (CPU int64), then its row table
// ([rows, 4] int64) and large-row segment offsets (int32), both on `device`.
std::tuple<at::Tensor, at::Tensor, at::Tensor> plan_to_tensors(const RowPlan& plan,
                                                               c10::Device device);

}  // namespace cuda
}  // namespace laperm

namespace laperm {
namespace cuda {

// Decodes `plan` (cuda_row_plan's host words) and checks that it was made for exactly
// these tensors (addresses and shapes) and that `rows` / `segment_offsets` are its tables
// on the tensors' device. A plan outlives nothing it describes: if a tensor moved, the
// caller must plan again; running a stale plan would write freed memory.
DecodedPlan check_plan(const char* op, ElementType type, at::TensorList weights,
                       at::TensorList sorted_inits, const at::Tensor& plan,
                       const at::Tensor& rows, const at::Tensor& segment_offsets);

// The most that any one launch of a plan handles: what its launcher allocates up front.
struct LaunchBounds {
  int64_t max_tile = 0;            // the largest block tile launched; 0: none
  int64_t max_batch_items = 0;     // the largest batch of large rows, in elements; 0: none
  int64_t max_batch_rows = 0;      // the most rows in one batch
  int64_t max_large_length = 0;    // the longest large row
};
LaunchBounds launch_bounds(const RowPlan& plan);

// What a backend does with each launch of a plan.
class PlanLauncher {
 public:
  virtual ~PlanLauncher() = default;
  // Called once, before the first launch: allocates everything the launches use, so that
  // running out of memory throws with every weight unchanged.
  virtual void prepare(const LaunchBounds& bounds) = 0;
  virtual void warp_rows(const RowDesc* rows, int64_t count) = 0;
  virtual void block_rows(int tile_index, const RowDesc* rows, int64_t count) = 0;
  virtual void large_rows(const LargeBatch& batch, const RowDesc* rows,
                          const int32_t* segment_offsets) = 0;
};

// Prepares the launcher, then issues a plan's launches in order: warp class, block tiles
// ascending, large batches. `rows` and `segment_offsets` point to the plan's tables
// wherever the launcher reads them.
void run_plan(const RowPlan& plan, const RowDesc* rows, const int32_t* segment_offsets,
              PlanLauncher& launcher);

}  // namespace cuda
}  // namespace laperm
