// Running a plan: the launches of a RowPlan, in order, through a PlanLauncher, which is
// the CUDA kernels (rank_match_cuda.cpp) or, in tests, their CPU emulation
// (testing/emulated_launcher.cpp). Plain C++.
#pragma once

#include <cstdint>

#include "cuda/host/plan.h"

namespace laperm {
namespace cuda {

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
