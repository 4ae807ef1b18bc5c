// The CUDA backend's host-side dispatch, as plain C++: which rows go to which size class,
// the device table of row descriptors, the batches of large rows and their scratch.
//
// It is compiled into every build (CPU-only included) and unit-tested on the CPU through
// laperm::cuda_row_plan (row_plan_op.cpp): the kernels need a GPU, so everything that
// decides what they are given is kept where a test without one can reach it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/row_desc.h"

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
  int64_t max_block_tile = kLargestBlockTile;  // largest block tile the device can run
  int64_t max_batch_items = int64_t(1) << 22;  // large rows per batch, in elements; a row
                                               // longer than this is a batch of its own
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
// memory per block, by row_desc.h's bound; 0 if none does.
int64_t largest_block_tile(ElementType type, int64_t smem_optin_bytes);

// The plan minus its two device tables (rows, segment_offsets), as int64 words: what the
// launch needs on the host. Tables travel separately, as device tensors.
std::vector<int64_t> encode_plan(const RowPlan& plan);

// encode_plan's words back, every field checked (std::invalid_argument otherwise);
// rows and segment_offsets stay empty, their sizes are in num_rows / num_offsets.
struct DecodedPlan {
  RowPlan plan;
  int64_t num_rows = 0;
  int64_t num_offsets = 0;
};
DecodedPlan decode_plan(const int64_t* words, int64_t size);

}  // namespace cuda
}  // namespace laperm
