// The CUDA backend's plan: which rows of a group of tensors go to which size class
// (size_classes.h), the table of row descriptors the launches read, and the batches of
// large rows with their scratch bounds. Plain C++, in every build, tested on the CPU.
//
// The pipeline from tensors to launches, one file a step:
//   plan         host/plan.{h,cpp}           TensorRows -> RowPlan (this file)
//   encode       host/plan_encoding.{h,cpp}  RowPlan <-> int64 words (the host tensor)
//   to tensors   host/plan_tensors.{h,cpp}   words + device tables; the check before a run
//   cache        laperm_kernels/ops/backends/plan_cache.py  (Python: one plan per group)
//   run          host/plan_runner.{h,cpp}    PlanLauncher: one call per launch, in order
//   launch       cuda/rank_match_cuda.cpp    the CUDA launcher (kernels.h), CUDA builds
//                testing/emulated_launcher.cpp  a CPU emulation of the kernels, tests only
// Torch tensors become TensorRows in host/tensor_group.{h,cpp}; the operators that expose
// the plan to Python are in host/plan_ops.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/element_type.h"
#include "cuda/row_desc.h"
#include "cuda/size_classes.h"

namespace laperm {
namespace cuda {

// One weight tensor and its sorted init, both contiguous: `rows` rows of `length`.
struct TensorRows {
  int64_t w_addr;
  int64_t s_addr;
  int64_t rows;
  int64_t length;
};

struct PlanLimits {
  int64_t max_block_tile = kLargestBlockTile;      // largest block tile the device can run
  int64_t max_batch_items = kDefaultBatchItems;    // large rows per batch, in elements; a
                                                   // row longer than this is a batch alone
};

// A launch of the warp class (tile_index == kWarpClass) or of one block tile.
constexpr int32_t kWarpClass = -1;
struct ClassLaunch {
  int32_t tile_index;
  int64_t row_begin;  // into RowPlan::rows
  int64_t row_count;
};

struct LargeBatch {
  int64_t row_begin;      // into RowPlan::rows
  int64_t row_count;
  int64_t items;          // elements of all its rows
  int64_t max_length;
  int64_t offsets_begin;  // into RowPlan::segment_offsets: row_count + 1 entries
};

struct RowPlan {
  ElementType type = ElementType::kFloat32;
  std::vector<TensorRows> tensors;        // what the plan was made for (checked at launch)
  std::vector<RowDesc> rows;              // warp rows, then each tile's, then large rows
  std::vector<ClassLaunch> launches;      // non-empty classes only
  std::vector<LargeBatch> batches;
  std::vector<int32_t> segment_offsets;   // batch-local [begin, end) of every large row
  int64_t max_batch_items = 0;            // the largest batch (sizes the scratch)
};

// Throws std::invalid_argument on a bad limit or a tensor that cannot be planned.
RowPlan plan_rows(ElementType type, const std::vector<TensorRows>& tensors,
                  const PlanLimits& limits);

// The largest block tile (in elements) whose kernel fits `smem_optin_bytes` of shared
// memory per block, by size_classes.h's bound; 0 if none does.
int64_t largest_block_tile(ElementType type, int64_t smem_optin_bytes);

// The most rows one launch of a class takes: kMaxWarpClassRows for kWarpClass,
// kMaxBlockClassRows for a block tile.
int64_t max_class_rows(int32_t tile_index);

}  // namespace cuda
}  // namespace laperm
