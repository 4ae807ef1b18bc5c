// Test-only: laperm::_test_emulate_planned_, which runs a plan on CPU tensors the way the
// CUDA kernels are specified to, one emulated launch at a time. It is not a backend: no
// Python API calls it, only the tests (and tests/reliability/fuzz.py).
//
// It needs no GPU, so tests on any machine run everything around the CUDA kernels:
// the plan's classes and tables, its checks, the launch sequence (run_plan, shared with
// the glue), the warp class's ranking rule (warp_rank.h, shared with the kernel), the
// block class's padding to its tile, and the large class's scratch segments as
// DeviceSegmentedRadixSort sees them (bounds from segment_offsets, not from the rows).
// Tests compare its results bit for bit with the PyTorch reference. Like the CUDA glue, it
// allocates all its scratch (scratch.h) before the first launch writes a weight.
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <numeric>
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

template <typename Format>
class CpuEmulation final : public PlanLauncher {
  using Bits = typename Format::Bits;
  static constexpr Bits kPad = Bits(~Bits(0));

 public:
  void prepare(const LaunchBounds& bounds) override {
    bounds_ = bounds;
    const int64_t key = sizeof(Bits), index = sizeof(int64_t);
    const int64_t total = (key + index) * (bounds.max_tile + bounds.max_batch_items) +
                          index * bounds.max_large_length;
    ScratchCounter counter;
    allocate(counter, tile_keys_, bounds.max_tile, "block-tile keys", total);
    allocate(counter, tile_order_, bounds.max_tile, "block-tile order", total);
    allocate(counter, large_keys_, bounds.max_batch_items, "large-row keys", total);
    allocate(counter, large_columns_, bounds.max_batch_items, "large-row columns", total);
    allocate(counter, large_order_, bounds.max_large_length, "large-row order", total);
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
    Bits* keys = tile_keys_.get();
    int64_t* order = tile_order_.get();
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
    Bits* keys = large_keys_.get();
    int64_t* columns = large_columns_.get();
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
      sort_stably(keys + begin, large_order_.get(), end - begin);
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

  // `count` elements into `buffer` (none if count is 0), or torch.OutOfMemoryError.
  template <typename T>
  static void allocate(ScratchCounter& counter, std::unique_ptr<T[]>& buffer, int64_t count,
                       const char* what, int64_t total_bytes) {
    if (count == 0) return;
    buffer = try_allocate<T>(counter, count);
    if (buffer) return;
    throw_out_of_memory(
        std::string("laperm::_test_emulate_planned_: out of memory: ") +
        format_bytes(count * int64_t(sizeof(T))) + " for the " + what + ", " +
        format_bytes(total_bytes) + " of scratch in all. No weight was modified. Free "
        "memory, or plan with a smaller max_batch_items.");
  }

  LaunchBounds bounds_;
  std::unique_ptr<Bits[]> tile_keys_;
  std::unique_ptr<int64_t[]> tile_order_;
  std::unique_ptr<Bits[]> large_keys_;
  std::unique_ptr<int64_t[]> large_columns_;
  std::unique_ptr<int64_t[]> large_order_;
};

void emulate_planned(at::TensorList weights, at::TensorList sorted_inits,
                     const at::Tensor& plan, const at::Tensor& rows,
                     const at::Tensor& segment_offsets) {
  const char* op = "laperm::_test_emulate_planned_";
  const ElementType type = check_group(op, weights, sorted_inits);
  TORCH_CHECK_VALUE(weights[0].device().is_cpu(), op, ": the tensors must be CPU tensors, "
                    "got ", weights[0].device());
  const DecodedPlan decoded =
      check_plan(op, type, weights, sorted_inits, plan, rows, segment_offsets);
  const auto* row_table = reinterpret_cast<const RowDesc*>(rows.data_ptr<int64_t>());
  const int32_t* offsets = segment_offsets.data_ptr<int32_t>();
  const bool ran = dispatch_element_type(type, false, [&](auto format) {
    CpuEmulation<decltype(format)> emulation;
    run_plan(decoded.plan, row_table, offsets, emulation);
    return true;
  });
  TORCH_CHECK(ran, op, ": unknown element type");
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CPU, m) {
  m.impl("_test_emulate_planned_", &emulate_planned);
}

}  // namespace cuda
}  // namespace laperm
