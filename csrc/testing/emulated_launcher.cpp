// Test-only: laperm_testing::emulate_planned_, which runs a plan on CPU tensors the way the
// CUDA kernels are specified to, one emulated launch at a time. It is not a backend: no
// Python API calls it, only the tests (and tests/reliability/fuzz.py).
//
// It needs no GPU, so tests on any machine run everything around the CUDA kernels:
// the plan's classes and tables, its checks, the launch sequence (run_plan, shared with
// the glue), the warp class's ranking rule (warp_rank.h, shared with the kernel), the
// block class's padding to its tile, and the large class's scratch segments as
// DeviceSegmentedRadixSort sees them (bounds from segment_offsets, not from the rows).
// Tests compare its results bit for bit with the PyTorch reference. Like the CUDA glue, it
// takes its scratch from a separate op (emulated_plan_scratch, as the CUDA path
// takes cuda_plan_scratch), or allocates it (scratch.h) before the first launch writes a
// weight: one byte buffer, carved into the arrays below.
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <new>
#include <numeric>
#include <optional>
#include <string>

#include "common/order_key.h"
#include "cuda/element_type.h"
#include "cuda/host/plan_runner.h"
#include "cuda/host/plan_tensors.h"
#include "cuda/host/tensor_group.h"
#include "cuda/warp_rank.h"
#include "scratch.h"

namespace laperm {
namespace cuda {
namespace {

// The emulation's scratch in bytes: int64 arrays (block-tile order, large-row columns and
// order), then keys of `key_bytes` each (block-tile keys, large-row keys).
int64_t emulated_scratch_bytes(int64_t key_bytes, const LaunchBounds& b) {
  return int64_t(sizeof(int64_t)) * (b.max_tile + b.max_batch_items + b.max_large_length) +
         key_bytes * (b.max_tile + b.max_batch_items);
}

// The scratch of a plan with these bounds (empty when it needs none), or
// torch.OutOfMemoryError saying how much.
at::Tensor allocate_emulated_scratch(ElementType type, const LaunchBounds& bounds) {
  ScratchCounter counter;
  const int64_t bytes = emulated_scratch_bytes(element_bytes(type), bounds);
  if (bytes == 0) return at::empty({0}, at::kByte);
  at::Tensor scratch;
  try {
    if (!counter.next_fails()) scratch = at::empty({bytes}, at::kByte);
  } catch (const c10::OutOfMemoryError&) {
  } catch (const std::bad_alloc&) {
  }
  if (!scratch.defined())
    throw_out_of_memory(
        "laperm_testing::emulate_planned_: out of memory: " + format_bytes(bytes) +
        " of scratch for block tiles of up to " + std::to_string(bounds.max_tile) +
        " and large-row batches of up to " + std::to_string(bounds.max_batch_items) +
        " elements. No weight was modified. Free memory, or plan with a smaller "
        "max_batch_items.");
  return scratch;
}

template <typename Format>
class CpuEmulation final : public PlanLauncher {
  using Bits = typename Format::Bits;
  static constexpr Bits kPad = Bits(~Bits(0));

 public:
  // `scratch`: emulated_plan_scratch's tensor for this plan, or undefined to
  // allocate it here.
  CpuEmulation(ElementType type, at::Tensor scratch) : type_(type), scratch_(std::move(scratch)) {}

  void prepare(const LaunchBounds& bounds) override {
    bounds_ = bounds;
    const int64_t bytes = emulated_scratch_bytes(sizeof(Bits), bounds);
    if (!scratch_.defined()) scratch_ = allocate_emulated_scratch(type_, bounds);
    TORCH_CHECK_VALUE(scratch_.device().is_cpu() && scratch_.scalar_type() == at::kByte &&
                          scratch_.is_contiguous() && scratch_.numel() >= bytes,
                      "laperm_testing::emulate_planned_: scratch must be the byte tensor "
                      "laperm_testing::emulated_plan_scratch made for this plan (", bytes,
                      " bytes on the CPU), got ", scratch_.numel(), " ",
                      scratch_.scalar_type(), " on ", scratch_.device());
    int64_t* index = reinterpret_cast<int64_t*>(scratch_.data_ptr());
    tile_order_ = index;
    large_columns_ = tile_order_ + bounds.max_tile;
    large_order_ = large_columns_ + bounds.max_batch_items;
    tile_keys_ = reinterpret_cast<Bits*>(large_order_ + bounds.max_large_length);
    large_keys_ = tile_keys_ + bounds.max_tile;
  }

  void warp_rows(const RowDesc* rows, int64_t count) override {
    for (int64_t r = 0; r < count; ++r) {  // 32 "lanes", each holding columns l, l + 32
      Bits* w = reinterpret_cast<Bits*>(rows[r].w_addr);
      const Bits* s = reinterpret_cast<const Bits*>(rows[r].s_addr);
      const int n = static_cast<int>(rows[r].length);
      TORCH_CHECK(n >= 1 && n <= kWarpMaxLength, "warp class row of length ", n);
      Bits lo[32], hi[32];
      for (int l = 0; l < 32; ++l) {
        lo[l] = l < n ? order_key<Format>(w[l]) : kPad;
        hi[l] = l + 32 < n ? order_key<Format>(w[l + 32]) : kPad;
      }
      int rank_lo[32] = {}, rank_hi[32] = {};
      for (int l = 0; l < 32; ++l)
        for (int src = 0; src < 32; ++src)
          count_preceding(lo[l], hi[l], lo[src], hi[src], src, l, rank_lo[l], rank_hi[l]);
      Bits out_lo[32], out_hi[32];  // a warp writes after every lane has read
      for (int l = 0; l < 32; ++l) {
        if (l < n) out_lo[l] = s[rank_lo[l]];
        if (l + 32 < n) out_hi[l] = s[rank_hi[l]];
      }
      for (int l = 0; l < 32; ++l) {
        if (l < n) w[l] = out_lo[l];
        if (l + 32 < n) w[l + 32] = out_hi[l];
      }
    }
  }

  void block_rows(int tile_index, const RowDesc* rows, int64_t count) override {
    TORCH_CHECK(tile_index >= 0 && tile_index < kNumBlockTiles, "tile index ", tile_index);
    const int64_t tile = kBlockTiles[tile_index].tile;
    TORCH_CHECK(tile <= bounds_.max_tile, "tile ", tile, " exceeds scratch");
    Bits* keys = tile_keys_;
    int64_t* order = tile_order_;
    for (int64_t r = 0; r < count; ++r) {
      Bits* w = reinterpret_cast<Bits*>(rows[r].w_addr);
      const Bits* s = reinterpret_cast<const Bits*>(rows[r].s_addr);
      const int64_t n = rows[r].length;
      TORCH_CHECK(n > kWarpMaxLength && n <= tile, "row of length ", n, " in tile ", tile);
      for (int64_t c = 0; c < tile; ++c) keys[c] = c < n ? order_key<Format>(w[c]) : kPad;
      sort_stably(keys, order, tile);  // BlockRadixSort over the padded tile
      for (int64_t rank = 0; rank < n; ++rank) w[order[rank]] = s[rank];
    }
  }

  void large_rows(const LargeBatch& batch, const RowDesc* rows,
                  const int32_t* segment_offsets) override {
    TORCH_CHECK(batch.items <= bounds_.max_batch_items &&
                    batch.max_length <= bounds_.max_large_length,
                "batch exceeds scratch");
    Bits* keys = large_keys_;
    int64_t* columns = large_columns_;
    for (int64_t r = 0; r < batch.row_count; ++r) {  // gather
      const Bits* w = reinterpret_cast<const Bits*>(rows[r].w_addr);
      for (int64_t i = 0; i < rows[r].length; ++i)
        keys[rows[r].scratch_offset + i] = order_key<Format>(w[i]);
    }
    for (int64_t seg = 0; seg < batch.row_count; ++seg) {  // the segmented sort
      const int64_t begin = segment_offsets[seg], end = segment_offsets[seg + 1];
      TORCH_CHECK(0 <= begin && begin <= end && end <= batch.items &&
                      end - begin <= batch.max_length,
                  "bad segment offsets");
      sort_stably(keys + begin, large_order_, end - begin);
      for (int64_t i = 0; i < end - begin; ++i) columns[begin + i] = large_order_[i];
    }
    for (int64_t r = 0; r < batch.row_count; ++r) {  // scatter
      Bits* w = reinterpret_cast<Bits*>(rows[r].w_addr);
      const Bits* s = reinterpret_cast<const Bits*>(rows[r].s_addr);
      const int64_t* row_columns = columns + rows[r].scratch_offset;
      for (int64_t rank = 0; rank < rows[r].length; ++rank) w[row_columns[rank]] = s[rank];
    }
  }

 private:
  // order = the positions of keys[0, n) in stable ascending order of their keys.
  static void sort_stably(const Bits* keys, int64_t* order, int64_t n) {
    std::iota(order, order + n, int64_t(0));
    std::stable_sort(order, order + n, [keys](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  }

  ElementType type_;
  LaunchBounds bounds_;
  at::Tensor scratch_;  // holds the arrays below
  int64_t* tile_order_ = nullptr;
  int64_t* large_columns_ = nullptr;
  int64_t* large_order_ = nullptr;
  Bits* tile_keys_ = nullptr;
  Bits* large_keys_ = nullptr;
};

at::Tensor emulated_plan_scratch(const at::Tensor& plan) {
  const DecodedPlan decoded = decode_plan_tensor("laperm_testing::emulated_plan_scratch", plan);
  return allocate_emulated_scratch(decoded.plan.type, launch_bounds(decoded.plan));
}

void emulate_planned(at::TensorList weights, at::TensorList sorted_inits,
                     const at::Tensor& plan, const at::Tensor& rows,
                     const at::Tensor& segment_offsets,
                     const std::optional<at::Tensor>& scratch) {
  const char* op = "laperm_testing::emulate_planned_";
  const ElementType type = check_group(op, weights, sorted_inits);
  TORCH_CHECK_VALUE(weights[0].device().is_cpu(), op, ": the tensors must be CPU tensors, "
                    "got ", weights[0].device());
  const DecodedPlan decoded =
      check_plan(op, type, weights, sorted_inits, plan, rows, segment_offsets);
  const auto* row_table = reinterpret_cast<const RowDesc*>(rows.data_ptr<int64_t>());
  const int32_t* offsets = segment_offsets.data_ptr<int32_t>();
  const bool ran = dispatch_element_type(type, false, [&](auto format) {
    CpuEmulation<decltype(format)> emulation(type, scratch.value_or(at::Tensor()));
    run_plan(decoded.plan, row_table, offsets, emulation);
    return true;
  });
  TORCH_CHECK(ran, op, ": unknown element type");
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm_testing, CPU, m) {
  m.impl("emulated_plan_scratch", &emulated_plan_scratch);
  m.impl("emulate_planned_", &emulate_planned);
}

}  // namespace cuda
}  // namespace laperm
