// The CUDA backend's plan (design: plan.h, size_classes.h).
#include "cuda/host/plan.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace laperm {
namespace cuda {
namespace {

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

// Classes in launch order: 0 is the warp class, 1 + t block tile t, kLargeSlot large.
constexpr int kLargeSlot = kNumBlockTiles + 1;
int class_slot(int64_t length, int64_t max_block_tile) {
  if (length <= kWarpMaxLength) return 0;
  for (int t = 0; t < kNumBlockTiles && kBlockTiles[t].tile <= max_block_tile; ++t)
    if (length <= kBlockTiles[t].tile) return 1 + t;  // the smallest tile that holds it
  return kLargeSlot;
}

std::string class_name(int slot) {
  if (slot == 0) return "the warp class (<= " + std::to_string(kWarpMaxLength) + " elements)";
  return "block tile " + std::to_string(kBlockTiles[slot - 1].tile);
}

void append_rows(std::vector<RowDesc>& out, const TensorRows& t, int64_t row_bytes) {
  for (int64_t r = 0; r < t.rows; ++r)
    out.push_back({t.w_addr + r * row_bytes, t.s_addr + r * row_bytes, t.length, -1});
}

}  // namespace

int64_t max_class_rows(int32_t tile_index) {
  return tile_index == kWarpClass ? kMaxWarpClassRows : kMaxBlockClassRows;
}

int64_t largest_block_tile(ElementType type, int64_t smem_optin_bytes) {
  int64_t best = 0;
  for (const BlockTile& t : kBlockTiles)
    if (block_tile_smem_bytes(t.tile, t.threads, element_bytes(type)) <= smem_optin_bytes)
      best = t.tile;
  return best;
}

RowPlan plan_rows(ElementType type, const std::vector<TensorRows>& tensors,
                  const PlanLimits& limits) {
  if (limits.max_block_tile < 0)
    fail("max_block_tile must be >= 0, got " + std::to_string(limits.max_block_tile));
  if (limits.max_batch_items < 1 || limits.max_batch_items > kMaxBatchItems)
    fail("max_batch_items must be in [1, 2^31 - 1], got " +
         std::to_string(limits.max_batch_items));
  const int64_t elem = element_bytes(type);

  // Group tensors by class: every row of a tensor has one length, so one class. Every
  // limit is checked here, before a table is built.
  std::vector<const TensorRows*> by_class[kLargeSlot + 1];
  int64_t class_rows[kLargeSlot + 1] = {};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorRows& t = tensors[i];
    if (t.rows < 0 || t.length < 0) fail("a tensor has a negative row count or length");
    if (t.rows == 0 || t.length == 0) continue;  // nothing to permute
    if (t.length > kMaxBatchItems)
      fail("weights[" + std::to_string(i) + "] has rows of " + std::to_string(t.length) +
           " elements; the cuda backend's limit is " + std::to_string(kMaxBatchItems) +
           " (2^31 - 1: CUB's item counts and the segment offsets are int32)");
    const int slot = class_slot(t.length, limits.max_block_tile);
    by_class[slot].push_back(&t);
    class_rows[slot] += t.rows;
  }
  for (int c = 0; c < kLargeSlot; ++c)
    if (class_rows[c] > max_class_rows(c - 1))
      fail("the group has " + std::to_string(class_rows[c]) + " rows in " + class_name(c) +
           "; one launch takes at most " + std::to_string(max_class_rows(c - 1)) +
           " (CUDA's grid limit): rank-match the tensors in several calls");

  RowPlan plan;
  plan.type = type;
  plan.tensors = tensors;
  for (int c = 0; c < kLargeSlot; ++c) {  // warp and block classes: one launch each
    const int64_t begin = static_cast<int64_t>(plan.rows.size());
    for (const TensorRows* t : by_class[c]) append_rows(plan.rows, *t, t->length * elem);
    const int64_t count = static_cast<int64_t>(plan.rows.size()) - begin;
    if (count > 0) plan.launches.push_back({c == 0 ? kWarpClass : c - 1, begin, count});
  }

  // Large rows: fill batches up to max_batch_items (and kMaxBatchRows rows); a row that
  // alone exceeds the bound gets a batch of its own rather than being refused, and so does
  // every row long enough to be sorted device-wide (size_classes.h: kDeviceSortMinLength).
  LargeBatch batch{static_cast<int64_t>(plan.rows.size()), 0, 0, 0, 0};
  auto close_batch = [&]() {
    if (batch.row_count == 0) return;
    batch.offsets_begin = static_cast<int64_t>(plan.segment_offsets.size());
    for (int64_t r = batch.row_begin; r < batch.row_begin + batch.row_count; ++r)
      plan.segment_offsets.push_back(static_cast<int32_t>(plan.rows[r].scratch_offset));
    plan.segment_offsets.push_back(static_cast<int32_t>(batch.items));
    plan.max_batch_items = std::max(plan.max_batch_items, batch.items);
    plan.batches.push_back(batch);
    batch = {static_cast<int64_t>(plan.rows.size()), 0, 0, 0, 0};
  };
  for (const TensorRows* t : by_class[kLargeSlot]) {
    const bool alone = sorts_device_wide(t->length, 1);
    for (int64_t r = 0; r < t->rows; ++r) {
      if (batch.row_count == kMaxBatchRows || alone ||
          (batch.row_count > 0 && batch.items + t->length > limits.max_batch_items))
        close_batch();
      const int64_t row_bytes = t->length * elem;
      plan.rows.push_back({t->w_addr + r * row_bytes, t->s_addr + r * row_bytes, t->length,
                           batch.items});
      batch.row_count += 1;
      batch.items += t->length;
      batch.max_length = std::max(batch.max_length, t->length);
      if (alone) close_batch();
    }
  }
  close_batch();
  return plan;
}

}  // namespace cuda
}  // namespace laperm
