// Host-side dispatch of the CUDA backend (design: row_plan.h, row_desc.h).
#include "cuda/host/row_plan.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace laperm {
namespace cuda {
namespace {

constexpr int64_t kPlanMagic = 0x6c6170657201;  // "laper" + format version 1
constexpr int64_t kHeaderWords = 8;
constexpr int64_t kTensorWords = 4;
constexpr int64_t kLaunchWords = 3;
constexpr int64_t kBatchWords = 5;

[[noreturn]] void fail(const std::string& what) { throw std::invalid_argument(what); }

// Classes in launch order: 0 is the warp class, 1 + t block tile t, kLargeSlot large.
constexpr int kLargeSlot = kNumBlockTiles + 1;
int class_slot(int64_t length, int64_t max_block_tile) {
  if (length <= kWarpMaxLength) return 0;
  for (int t = 0; t < kNumBlockTiles && kBlockTiles[t].tile <= max_block_tile; ++t)
    if (length <= kBlockTiles[t].tile) return 1 + t;  // the smallest tile that holds it
  return kLargeSlot;
}

// The most rows one launch of class `slot` takes (row_desc.h); large batches have none.
int64_t max_class_rows(int slot) {
  return slot == 0 ? kMaxWarpClassRows : slot < kLargeSlot ? kMaxBlockClassRows : INT64_MAX;
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
    if (class_rows[c] > max_class_rows(c))
      fail("the group has " + std::to_string(class_rows[c]) + " rows in " + class_name(c) +
           "; one launch takes at most " + std::to_string(max_class_rows(c)) +
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
  // every row long enough to be sorted device-wide (row_desc.h: kDeviceSortMinLength).
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

std::vector<int64_t> encode_plan(const RowPlan& plan) {
  std::vector<int64_t> w = {kPlanMagic,
                            static_cast<int64_t>(plan.type),
                            static_cast<int64_t>(plan.tensors.size()),
                            static_cast<int64_t>(plan.launches.size()),
                            static_cast<int64_t>(plan.batches.size()),
                            static_cast<int64_t>(plan.rows.size()),
                            static_cast<int64_t>(plan.segment_offsets.size()),
                            plan.max_batch_items};
  for (const TensorRows& t : plan.tensors) w.insert(w.end(), {t.w_addr, t.s_addr, t.rows, t.length});
  for (const ClassLaunch& l : plan.launches) w.insert(w.end(), {l.tile_index, l.row_begin, l.row_count});
  for (const LargeBatch& b : plan.batches)
    w.insert(w.end(), {b.row_begin, b.row_count, b.items, b.max_length, b.offsets_begin});
  return w;
}

DecodedPlan decode_plan(const int64_t* words, int64_t size) {
  auto bad = [](const std::string& what) { fail("not a plan made by laperm::cuda_row_plan: " + what); };
  if (size < kHeaderWords || words[0] != kPlanMagic) bad("wrong header");
  DecodedPlan out;
  RowPlan& p = out.plan;
  if (words[1] < 0 || words[1] > 3) bad("unknown element type");
  p.type = static_cast<ElementType>(words[1]);
  const int64_t n_tensors = words[2], n_launches = words[3], n_batches = words[4];
  out.num_rows = words[5];
  out.num_offsets = words[6];
  p.max_batch_items = words[7];
  if (n_tensors < 0 || n_launches < 0 || n_launches > kNumBlockTiles + 1 || n_batches < 0 ||
      out.num_rows < 0 || out.num_offsets < 0 || p.max_batch_items < 0 ||
      p.max_batch_items > kMaxBatchItems)
    bad("counts out of range");
  if (size != kHeaderWords + n_tensors * kTensorWords + n_launches * kLaunchWords +
                  n_batches * kBatchWords)
    bad("its size does not match its counts");
  const int64_t* at = words + kHeaderWords;
  for (int64_t i = 0; i < n_tensors; ++i, at += kTensorWords)
    p.tensors.push_back({at[0], at[1], at[2], at[3]});
  for (int64_t i = 0; i < n_launches; ++i, at += kLaunchWords) {
    const ClassLaunch l{static_cast<int32_t>(at[0]), at[1], at[2]};
    if (l.tile_index < kWarpClass || l.tile_index >= kNumBlockTiles || l.row_begin < 0 ||
        l.row_count < 1 || l.row_count > max_class_rows(l.tile_index + 1) ||
        l.row_begin + l.row_count > out.num_rows)
      bad("a launch is out of range");
    p.launches.push_back(l);
  }
  for (int64_t i = 0; i < n_batches; ++i, at += kBatchWords) {
    const LargeBatch b{at[0], at[1], at[2], at[3], at[4]};
    if (b.row_begin < 0 || b.row_count < 1 || b.row_count > kMaxBatchRows ||
        b.row_begin + b.row_count > out.num_rows || b.items < 1 ||
        b.items > p.max_batch_items || b.max_length < 1 || b.max_length > b.items ||
        b.offsets_begin < 0 || b.offsets_begin + b.row_count + 1 > out.num_offsets)
      bad("a batch is out of range");
    p.batches.push_back(b);
  }
  return out;
}

}  // namespace cuda
}  // namespace laperm
