// A plan as int64 words, and back (layout: plan_encoding.h).
#include "cuda/host/plan_encoding.h"

#include <stdexcept>
#include <string>

namespace laperm {
namespace cuda {

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
  auto bad = [](const std::string& what) {
    throw std::invalid_argument("not a plan made by laperm::cuda_row_plan: " + what);
  };
  if (size < kPlanHeaderWords || words[0] != kPlanMagic) bad("wrong header");
  DecodedPlan out;
  RowPlan& p = out.plan;
  if (words[1] < 0 || words[1] >= kNumElementTypes) bad("unknown element type");
  p.type = static_cast<ElementType>(words[1]);
  const int64_t n_tensors = words[2], n_launches = words[3], n_batches = words[4];
  out.num_rows = words[5];
  out.num_offsets = words[6];
  p.max_batch_items = words[7];
  if (n_tensors < 0 || n_launches < 0 || n_launches > kNumBlockTiles + 1 || n_batches < 0 ||
      out.num_rows < 0 || out.num_offsets < 0 || p.max_batch_items < 0 ||
      p.max_batch_items > kMaxBatchItems)
    bad("counts out of range");
  if (size != kPlanHeaderWords + n_tensors * kTensorWords + n_launches * kLaunchWords +
                  n_batches * kBatchWords)
    bad("its size does not match its counts");
  const int64_t* at = words + kPlanHeaderWords;
  for (int64_t i = 0; i < n_tensors; ++i, at += kTensorWords)
    p.tensors.push_back({at[0], at[1], at[2], at[3]});
  for (int64_t i = 0; i < n_launches; ++i, at += kLaunchWords) {
    const ClassLaunch l{static_cast<int32_t>(at[0]), at[1], at[2]};
    if (at[0] < kWarpClass || at[0] >= kNumBlockTiles || l.row_begin < 0 ||
        l.row_count < 1 || l.row_count > max_class_rows(l.tile_index) ||
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
