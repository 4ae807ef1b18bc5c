// Interface between the CPU rank-matching driver and its per-instruction-set kernels.
//
// The kernels are compiled three times (AVX-512, AVX2, portable) from one source,
// row_kernel_impl.h; the driver picks one table at run time from what the CPU supports.
// This header declares plain data and function pointers only: no inline code, so nothing
// compiled for one instruction set can leak into another translation unit.
#pragma once

#include <cstdint>

namespace laperm {
namespace cpu {

// Per-thread scratch, owned by the driver: two untyped buffers of at least `capacity`
// 64-bit words each, capacity >= the longest row handed to the kernel. Untyped because a
// kernel may use them as 32-bit or as 64-bit words, row by row. Rows of at most one
// element touch no scratch (capacity 0 and null buffers are fine for them).
struct RowScratch {
  void* words;
  void* spare;
  int64_t capacity;
};
constexpr int64_t kScratchBytesPerElement = 2 * sizeof(uint64_t);

// The longest row the kernels take: the wide path's words hold a 32-bit column.
constexpr int64_t kMaxRowLength = int64_t(1) << 32;

// Rank-matches `rows` contiguous rows of `row_len` elements in place:
// for every row, weight[order(weight)[i]] = sorted_init[i]. Elements are raw bit patterns
// of the dtype named by the table slot. Allocates nothing and never throws.
using RowsKernel = void (*)(void* weight, const void* sorted_init, int64_t rows,
                            int64_t row_len, RowScratch scratch) noexcept;

// The largest magnitude among n elements of one bit width: max of (bits with the sign bit
// cleared), as unsigned integers. That is the bits of max |x|; above the bits of +inf,
// the row holds a NaN. Reads n elements, nothing else.
using MaxMagnitudeKernel = uint64_t (*)(const void* x, int64_t n) noexcept;

struct KernelTable {
  const char* isa;
  RowsKernel float32;
  RowsKernel float64;
  RowsKernel float16;
  RowsKernel bfloat16;
  MaxMagnitudeKernel max_magnitude16;  // float16, bfloat16
  MaxMagnitudeKernel max_magnitude32;  // float32
  MaxMagnitudeKernel max_magnitude64;  // float64
};

KernelTable kernel_table_generic();
#if defined(__x86_64__)
KernelTable kernel_table_avx2();
KernelTable kernel_table_avx512();
#endif

// The best table this CPU can run; `LAPERM_CPU_ISA=generic|avx2|avx512` caps it (for tests
// and benchmarks of the slower paths).
const KernelTable& best_kernel_table();

}  // namespace cpu
}  // namespace laperm
