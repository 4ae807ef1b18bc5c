// Running a plan through a launcher (plan_runner.h).
#include "cuda/host/plan_runner.h"

#include <algorithm>

namespace laperm {
namespace cuda {

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
