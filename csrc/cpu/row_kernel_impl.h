// The CPU rank-matching kernel: one stable sort per row, then W[order[i]] = S[i].
//
// Design (one row of n elements, any float dtype). Rows of 33 to kCompactMaxRow elements
// (every weight row of common CNNs and transformers) take the compact path
// (compact_path.h):
//   1. Map. Each value gets a coordinate c of Ks bits (Ks = 16..22), monotone
//      non-decreasing in the contract's order: 16-bit dtypes use their whole order key;
//      fp32/fp64 use sign | clamped magnitude (see CompactMap): magnitudes below
//      max/2^kCompactBands collapse onto the floor, and the top Ks-1 bits of what is left
//      spend the coordinate on the row's own range of exponents, not on all 256 of them.
//      For Gaussian-like weights, two distinct values share c for ~1-3% of the elements
//      (mostly in pairs), where the raw top 19 bits of the order key would tie for ~40%.
//   2. Pack. Element i becomes one 32-bit word c << b | i, b = bit_width(n - 1); fp32 and
//      fp64 rows also keep a copy of their bits in scratch.
//   3. Sort the words by c with a stable two-pass LSD radix sort (digits of Ks/2 bits,
//      radix_passes.h). The last pass also scatters: W[column] = S[destination].
//   4. Fix up (tie_fixup.h). Runs of words with equal c (in column order: the sort is
//      stable) are re-sorted by the full order key of the copied bits, and S is scattered
//      again over each run whose order changed. Ties are found 16 pairs at a time (SIMD
//      compares where built for it); a pair is one compare-swap; a run already in order
//      (equal values, such as pruned zeros) costs one scan.
// Longer rows, and the rare row whose values crowd into a few coordinates (step 4 finds a
// long tie run out of order; W is restored from the copy then), take the wide path
// (wide_path.h): 64-bit words (the top 32 key bits above a 32-bit column), two or three
// LSD passes of 8-11 bit digits, the same fix-up on 64-bit words, then the scatter. Rows
// of up to kInsertionSortMaxRow elements take it too, with an insertion sort.
// Scratch is the driver's two buffers of n 64-bit words (row_kernel.h).
//
// This file is compiled once per instruction set (row_kernel_{avx512,avx2,generic}.cpp),
// each defining LAPERM_ISA as its own namespace, with `#pragma GCC target` in force.
// Everything here has internal linkage and no STL is included, so no out-of-line copy
// built for one instruction set can be picked by the linker for another.

#ifndef LAPERM_ISA
#error "define LAPERM_ISA (a namespace name) before including row_kernel_impl.h"
#endif
// The build's SIMD level, set by the including .cpp beside its #pragma GCC target:
// 0 portable, 1 AVX2 (x86-64-v3), 2 AVX-512 (x86-64-v4). g++ does not define __AVX2__ or
// __AVX512F__ for a target pragma (checked with g++ 12), so the level cannot come from them.
#ifndef LAPERM_SIMD_LEVEL
#error "define LAPERM_SIMD_LEVEL (0, 1 or 2) before including row_kernel_impl.h"
#endif

#include <cstdint>
#if LAPERM_SIMD_LEVEL >= 1
#include <immintrin.h>  // intrinsics are always-inline: no out-of-line copies to merge
#endif

#include "../common/order_key.h"
#include "row_kernel.h"

namespace laperm {
namespace cpu {
namespace LAPERM_ISA {
namespace {

#define LAPERM_ROW_KERNEL_FRAGMENT
#include "radix_passes.h"
#include "tie_fixup.h"
#include "compact_path.h"
#include "wide_path.h"
#include "max_magnitude.h"
#undef LAPERM_ROW_KERNEL_FRAGMENT

template <typename Format>
void rank_match_row(typename Format::Bits* w, const typename Format::Bits* s, int64_t n,
                    RowScratch scratch) {
  if (n <= 1) {
    if (n == 1) w[0] = s[0];
    return;
  }
  const bool compact = n > kInsertionSortMaxRow && n <= kCompactMaxRow;
  if (!compact || !compact_rank_match_row<Format>(w, s, n, scratch))
    wide_rank_match_row<Format>(w, s, n, scratch);
}

template <typename Format>
void rank_match_rows(void* weight, const void* sorted_init, int64_t rows, int64_t row_len,
                     RowScratch scratch) noexcept {
  using Bits = typename Format::Bits;
  auto* w = static_cast<Bits*>(weight);
  const auto* s = static_cast<const Bits*>(sorted_init);
  for (int64_t r = 0; r < rows; ++r)
    rank_match_row<Format>(w + r * row_len, s + r * row_len, row_len, scratch);
}

}  // namespace
}  // namespace LAPERM_ISA
}  // namespace cpu
}  // namespace laperm

namespace laperm {
namespace cpu {
namespace LAPERM_ISA {

inline KernelTable make_kernel_table(const char* isa) {
  return {isa,
          &rank_match_rows<Float32Format>,
          &rank_match_rows<Float64Format>,
          &rank_match_rows<Float16Format>,
          &rank_match_rows<BFloat16Format>,
          &max_magnitude<uint16_t>,
          &max_magnitude<uint32_t>,
          &max_magnitude<uint64_t>};
}

}  // namespace LAPERM_ISA
}  // namespace cpu
}  // namespace laperm
