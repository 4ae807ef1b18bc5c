// A plan as int64 words: the host half of what laperm::cuda_row_plan returns (the row
// table and the segment offsets travel separately, as device tensors). The words are
// opaque to Python, which reads a plan through laperm_testing::cuda_decode_plan
// (testing/inspection.cpp).
//
// Layout, in words: a header of kPlanHeaderWords
//   [magic, element type, tensors, launches, batches, rows, segment offsets,
//    max_batch_items]
// then kTensorWords per tensor (TensorRows), kLaunchWords per launch (ClassLaunch) and
// kBatchWords per batch (LargeBatch), each in its struct's field order.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/host/plan.h"

namespace laperm {
namespace cuda {

constexpr int64_t kPlanMagic = 0x6c6170657201;  // "laper" + format version 1
constexpr int64_t kPlanHeaderWords = 8;
constexpr int64_t kTensorWords = 4;
constexpr int64_t kLaunchWords = 3;
constexpr int64_t kBatchWords = 5;

// The plan minus its two device tables (rows, segment_offsets).
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
