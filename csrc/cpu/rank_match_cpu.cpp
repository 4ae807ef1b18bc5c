// CPU kernel of laperm::rank_match_many_: OpenMP over all rows of all tensors at once.
//
// The rows of every tensor are cut into chunks of about equal work (rows differ in length
// across tensors: 147 to 4,608 in ResNet-50), the chunks are handed out largest first with
// dynamic scheduling, and each thread sorts its rows with its own two scratch buffers, so
// the whole model is one parallel region and no O(model size) memory is allocated.
// Threads: torch.get_num_threads() (torch.set_num_threads controls it).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "row_kernel.h"

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
    default: TORCH_CHECK(false, "laperm::rank_match_many_: unsupported dtype ", dtype);
  }
}

// Rows as docs/contract.md defines them: reshape(shape[0], -1), a 1-D tensor being one row.
std::pair<int64_t, int64_t> rows_and_length(const at::Tensor& t) {
  if (t.dim() == 1) return {1, t.numel()};
  const int64_t rows = t.size(0);
  return {rows, rows == 0 ? 0 : t.numel() / rows};
}

void check_inputs(at::TensorList weights, at::TensorList sorted_inits) {
  // The Python API validates with friendlier messages; these guard direct torch.ops calls.
  TORCH_CHECK(weights.size() == sorted_inits.size(), "laperm::rank_match_many_: got ",
              weights.size(), " weights but ", sorted_inits.size(), " sorted_inits");
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    const at::Tensor& s = sorted_inits[i];
    TORCH_CHECK(w.dim() >= 1, "laperm::rank_match_many_: weights[", i, "] is 0-d");
    TORCH_CHECK(w.device().is_cpu() && s.device().is_cpu(),
                "laperm::rank_match_many_ (CPU kernel): weights[", i,
                "] and sorted_inits[", i, "] must be CPU tensors");
    TORCH_CHECK(s.scalar_type() == w.scalar_type(), "laperm::rank_match_many_: sorted_inits[",
                i, "] has dtype ", s.scalar_type(), " but weights[", i, "] has ",
                w.scalar_type());
    TORCH_CHECK(s.sizes() == w.sizes(), "laperm::rank_match_many_: sorted_inits[", i,
                "] has shape ", s.sizes(), " but weights[", i, "] has ", w.sizes());
    TORCH_CHECK(w.is_contiguous() && s.is_contiguous(), "laperm::rank_match_many_: weights[",
                i, "] and sorted_inits[", i, "] must be contiguous");
    TORCH_CHECK(rows_and_length(w).second <= (int64_t(1) << 32),
                "laperm::rank_match_many_: rows of weights[", i, "] exceed 2^32 elements");
    (void)kernel_for(best_kernel_table(), w.scalar_type());
  }
}

void rank_match_many_cpu(at::TensorList weights, at::TensorList sorted_inits) {
  check_inputs(weights, sorted_inits);
  const KernelTable& table = best_kernel_table();
  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();

  int64_t total = 0;
  int64_t longest_row = 0;
  for (const at::Tensor& w : weights) {
    total += w.numel();
    longest_row = std::max(longest_row, rows_and_length(w).second);
  }
  if (total == 0) return;
  const bool serial = threads == 1 || total < kSerialBelowElements;
  const int64_t chunk_target = serial ? total : std::max<int64_t>(1, total / (threads * kChunksPerThread));

  std::vector<RowChunk> chunks;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto [rows, len] = rows_and_length(weights[i]);
    if (rows == 0 || len == 0) continue;
    const int64_t item = weights[i].element_size();
    const int64_t rows_per_chunk = std::max<int64_t>(1, chunk_target / len);
    char* w = static_cast<char*>(weights[i].data_ptr());
    const char* s = static_cast<const char*>(sorted_inits[i].const_data_ptr());
    for (int64_t r = 0; r < rows; r += rows_per_chunk) {
      const int64_t n = std::min(rows_per_chunk, rows - r);
      chunks.push_back({kernel_for(table, weights[i].scalar_type()), w + r * len * item,
                        s + r * len * item, n, len});
    }
  }
  std::stable_sort(chunks.begin(), chunks.end(), [](const RowChunk& a, const RowChunk& b) {
    return a.rows * a.row_len > b.rows * b.row_len;  // largest first: the tail evens out
  });

  const int64_t num_chunks = static_cast<int64_t>(chunks.size());
#pragma omp parallel num_threads(serial ? 1 : threads)
  {
    // Raw storage (no object type yet): the kernels place 32- or 64-bit words in it.
    const std::unique_ptr<void, void (*)(void*)> storage(
        ::operator new(2 * sizeof(uint64_t) * longest_row), [](void* p) { ::operator delete(p); });
    uint64_t* const halves = static_cast<uint64_t*>(storage.get());
    const RowScratch scratch{halves, halves + longest_row, longest_row};
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < num_chunks; ++c) {
      const RowChunk& chunk = chunks[c];
      chunk.kernel(chunk.weight, chunk.sorted_init, chunk.rows, chunk.row_len, scratch);
    }
  }
}

std::string cpu_kernel_isa() { return best_kernel_table().isa; }

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CPU, m) { m.impl("rank_match_many_", &rank_match_many_cpu); }

// An op with no tensor arguments dispatches to CompositeExplicitAutograd.
TORCH_LIBRARY_IMPL(laperm, CompositeExplicitAutograd, m) {
  m.impl("cpu_kernel_isa", &cpu_kernel_isa);
}

}  // namespace cpu
}  // namespace laperm
