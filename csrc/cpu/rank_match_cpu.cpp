// CPU kernel of laperm::rank_match_many_: OpenMP over all rows of all tensors at once.
//
// The rows of every tensor are cut into chunks of about equal work (rows differ in length
// across tensors: 147 to 4,608 in ResNet-50), the chunks are handed out largest first with
// dynamic scheduling, and each thread sorts its rows with its own two scratch buffers, so
// the whole model is one parallel region and no O(model size) memory is allocated.
// Threads: torch.get_num_threads() (torch.set_num_threads controls it).
//
// All scratch is allocated before the parallel region, so running out of memory raises
// torch.OutOfMemoryError with every weight unchanged, and nothing in the region throws.
// A thread's scratch is sized for the longest row it can be handed (ChunkQueue), not the
// longest of the call: a model's one huge row costs one thread's scratch, not every one's.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "rank_match_cpu.h"
#include "row_kernel.h"
#include "scratch.h"
#include "tensor_pairs.h"

namespace laperm {
namespace cpu {
namespace {

constexpr int64_t kChunksPerThread = 8;         // slack for dynamic load balancing
constexpr int64_t kSerialBelowElements = 16384;  // not worth waking a thread pool

struct RowChunk {
  RowsKernel kernel;
  char* weight;
  const char* sorted_init;
  int64_t rows;
  int64_t row_len;
};

RowsKernel kernel_for(const KernelTable& table, at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return table.float32;
    case at::kDouble: return table.float64;
    case at::kHalf: return table.float16;
    case at::kBFloat16: return table.bfloat16;
    default:
      TORCH_INTERNAL_ASSERT(false, "unsupported dtype ", dtype, " (check_pairs refuses it)");
  }
}

void check_inputs(at::TensorList weights, at::TensorList sorted_inits) {
  // The Python API validates with friendlier messages; these guard direct torch.ops calls,
  // with the checks (and error types) of every operator, then the CPU kernel's own.
  const char* op = "laperm::rank_match_many_";
  check_pairs(op, weights, sorted_inits);
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    TORCH_CHECK_VALUE(w.device().is_cpu() && sorted_inits[i].device().is_cpu(), op,
                      " (CPU kernel): weights[", i, "] and sorted_inits[", i,
                      "] must be CPU tensors");
    const int64_t length = rows_and_length(w).length;
    TORCH_CHECK_VALUE(length <= kMaxRowLength, op, " (CPU kernel): weights[", i,
                      "] has rows of ", length, " elements; the limit is ", kMaxRowLength,
                      " (2^32: columns are 32-bit)");
  }
}

// The chunks of a call, largest first, and how many threads run them.
struct Work {
  std::vector<RowChunk> chunks;
  int threads;
};

Work cut_into_chunks(at::TensorList weights, at::TensorList sorted_inits) {
  const KernelTable& table = best_kernel_table();
  const int max_threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  int64_t total = 0;
  for (const at::Tensor& w : weights) total += w.numel();
  const bool serial = max_threads == 1 || total < kSerialBelowElements;
  const int64_t chunk_target =
      serial ? total : std::max<int64_t>(1, total / (max_threads * kChunksPerThread));

  Work work{{}, 1};
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto [rows, len] = rows_and_length(weights[i]);
    if (rows == 0 || len == 0) continue;
    const int64_t item = weights[i].element_size();
    const int64_t rows_per_chunk = std::max<int64_t>(1, chunk_target / len);
    char* w = static_cast<char*>(weights[i].data_ptr());
    const char* s = static_cast<const char*>(sorted_inits[i].const_data_ptr());
    for (int64_t r = 0; r < rows; r += rows_per_chunk) {
      const int64_t n = std::min(rows_per_chunk, rows - r);
      work.chunks.push_back({kernel_for(table, weights[i].scalar_type()), w + r * len * item,
                             s + r * len * item, n, len});
    }
  }
  if (serial) return work;  // one thread takes the chunks in any order
  std::stable_sort(work.chunks.begin(), work.chunks.end(),
                   [](const RowChunk& a, const RowChunk& b) {
    return a.rows * a.row_len > b.rows * b.row_len;  // largest first: the tail evens out
  });
  work.threads = static_cast<int>(std::min<int64_t>(max_threads, work.chunks.size()));
  return work;
}

// Hands out chunks in order (dynamic scheduling, one chunk at a time) and, with a
// thread's first chunk, the index of its scratch slot. Both counters move in one atomic
// add, so slots are numbered in the order of first chunks: the thread holding slot j took
// its first chunk after j threads took theirs, so that chunk, and every later one, is
// chunk j or after. Slot j therefore needs room for the longest row from chunk j on.
class ChunkQueue {
 public:
  // The thread's first chunk (>= the chunk count when none is left) and its slot.
  int64_t first(int* slot) {
    const uint64_t v = next_.fetch_add(kSlotStep | 1, std::memory_order_relaxed);
    *slot = static_cast<int>(v >> 32);
    return static_cast<int64_t>(v & kChunkMask);
  }
  int64_t next() {
    return static_cast<int64_t>(next_.fetch_add(1, std::memory_order_relaxed) & kChunkMask);
  }

 private:
  static constexpr uint64_t kSlotStep = uint64_t(1) << 32;  // high half: slots given out
  static constexpr uint64_t kChunkMask = kSlotStep - 1;     // low half: chunks given out
  std::atomic<uint64_t> next_{0};
};

// One scratch slot per thread, in ChunkQueue's order, all allocated before any row is
// touched; throws torch.OutOfMemoryError saying what each thread needs.
class ThreadScratch {
 public:
  ThreadScratch(const std::vector<RowChunk>& chunks, int threads) {
    std::vector<int64_t> longest(threads, 0);  // longest row from chunk j on, for j < threads
    int64_t suffix = 0;
    for (int64_t c = static_cast<int64_t>(chunks.size()) - 1; c >= 0; --c) {
      suffix = std::max(suffix, chunks[c].row_len);
      if (c < threads) longest[c] = suffix;
    }
    ScratchCounter counter;
    for (int j = 0; j < threads; ++j) {
      const int64_t capacity = longest[j] > 1 ? longest[j] : 0;  // rows of <= 1: none
      std::unique_ptr<uint64_t[]> storage;
      if (capacity > 0 && !(storage = try_allocate<uint64_t>(counter, 2 * capacity)))
        fail(longest, j);
      slots_.push_back({storage.get(), storage.get() + capacity, capacity});
      storage_.push_back(std::move(storage));
    }
  }
  const RowScratch& slot(int j) const { return slots_[j]; }

 private:
  [[noreturn]] static void fail(const std::vector<int64_t>& longest, int j) {
    int64_t total = 0;
    for (int64_t n : longest) total += n > 1 ? n * kScratchBytesPerElement : 0;
    const int threads = static_cast<int>(longest.size());
    throw_out_of_memory(
        "laperm::rank_match_many_ (CPU kernel): out of memory for sorting scratch: thread " +
        std::to_string(j + 1) + " of " + std::to_string(threads) + " needs " +
        format_bytes(longest[j] * kScratchBytesPerElement) + " for rows of up to " +
        std::to_string(longest[j]) + " elements (" + std::to_string(kScratchBytesPerElement) +
        " bytes per element), all threads " + format_bytes(total) +
        ". No weight was modified. Free memory, or use fewer threads (torch.set_num_threads): "
        "each thread holds scratch for the longest row it may sort.");
  }

  std::vector<std::unique_ptr<uint64_t[]>> storage_;
  std::vector<RowScratch> slots_;
};

// Runs every chunk on work.threads threads. Nothing here allocates or throws.
void run_chunks(const Work& work, const ThreadScratch& scratch) noexcept {
  if (work.threads == 1) {  // no parallel region to enter: small calls are mostly this cost
    for (const RowChunk& chunk : work.chunks)
      chunk.kernel(chunk.weight, chunk.sorted_init, chunk.rows, chunk.row_len, scratch.slot(0));
    return;
  }
  const int64_t count = static_cast<int64_t>(work.chunks.size());
  ChunkQueue queue;
#pragma omp parallel num_threads(work.threads)
  {
    int slot;
    for (int64_t c = queue.first(&slot); c < count; c = queue.next()) {
      const RowChunk& chunk = work.chunks[c];
      chunk.kernel(chunk.weight, chunk.sorted_init, chunk.rows, chunk.row_len,
                   scratch.slot(slot));
    }
  }
}

}  // namespace

void rank_match_many_cpu(at::TensorList weights, at::TensorList sorted_inits) {
  check_inputs(weights, sorted_inits);
  const Work work = cut_into_chunks(weights, sorted_inits);
  if (work.chunks.empty()) return;
  // ChunkQueue counts chunks in 32 bits: every chunk, plus one failed take per thread.
  TORCH_INTERNAL_ASSERT(work.chunks.size() + work.threads < (uint64_t(1) << 32));
  const ThreadScratch scratch(work.chunks, work.threads);  // may throw: nothing written yet
  run_chunks(work, scratch);
}

namespace {

std::string cpu_kernel_isa() { return best_kernel_table().isa; }

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CPU, m) { m.impl("rank_match_many_", &rank_match_many_cpu); }

// An op with no tensor arguments dispatches to CompositeExplicitAutograd.
TORCH_LIBRARY_IMPL(laperm, CompositeExplicitAutograd, m) {
  m.impl("cpu_kernel_isa", &cpu_kernel_isa);
}

}  // namespace cpu
}  // namespace laperm
