// The CPU rank-matching kernel: one stable sort per row, then W[order[i]] = S[i].
//
// Design (one row of n elements, any float dtype):
//   1. Pack. Element i becomes one 64-bit word: its order key (common/order_key.h; the
//      top 32 bits of it for fp64) in the high half, its column i in the low half. For
//      keys of up to 32 bits, comparing words is exactly the contract's (value, column)
//      order. The radix histograms are counted in the same pass.
//   2. Sort the words by the top bits of the key with a stable two-pass LSD radix sort
//      (digits of 8-11 bits, about log2(n), so the 2 x 2^digit counters stay cheap next
//      to the n words moved; a pass whose digit is constant is skipped). The column rides
//      along in the word, and since the words start in column order, stability keeps
//      equal keys in column order: no pass is spent on the column bits.
//   3. Fix up. Two passes order the words by the top 2 x digit key bits (16-22); where
//      that is the whole key (fp16/bf16) the order is exact. Otherwise runs of words
//      whose sorted bits tie are re-sorted by the whole word (fp64: by the full key,
//      recomputed from W, still intact). For real weights the runs are few and short;
//      a run already in order (equal values, such as pruned zeros) costs one scan.
//      Three exact passes would move every word once more; the fix-up touches ~10%.
//   4. Scatter. W[column of word i] = S[i]: S is read in order and W is written in
//      place, the row being in L1/L2 by now.
// Scratch is two n-word buffers per thread, whatever the model size.
//
// This file is compiled once per instruction set (row_kernel_{avx512,avx2,generic}.cpp),
// each defining LAPERM_ISA as its own namespace, with `#pragma GCC target` in force.
// Everything here has internal linkage and no STL is included, so no out-of-line copy
// built for one instruction set can be picked by the linker for another.

#ifndef LAPERM_ISA
#error "define LAPERM_ISA (a namespace name) before including row_kernel_impl.h"
#endif

#include <cstdint>

#include "../common/order_key.h"
#include "row_kernel.h"

namespace laperm {
namespace cpu {
namespace LAPERM_ISA {
namespace {

using Word = uint64_t;

constexpr int64_t kInsertionSortMaxRow = 32;  // shorter rows skip the radix sort
constexpr int kMinDigitBits = 8;
constexpr int kMaxDigitBits = 11;             // 2,048 buckets: 8 KiB of counters a pass
constexpr int64_t kThreePassMinRow = 65536;   // rows this long sort 3 digits, not 2
constexpr int64_t kTieRunBlock = 16;          // tie runs are insertion-sorted in blocks

inline int bit_width(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

// Which top bits of the word the radix sort orders: `passes` digits of `digit_bits`.
struct RadixPlan {
  int passes;
  int digit_bits;
  int sorted_bits;  // passes * digit_bits, at most the key bits the word holds
};

// Digits of about log2(n) bits balance the two costs of a pass: moving n words, and
// clearing and scanning 2^digit counters.
inline RadixPlan plan_radix(int64_t n, int word_key_bits) {
  int digit = bit_width(uint64_t(n)) - 1;
  digit = digit < kMinDigitBits ? kMinDigitBits : digit > kMaxDigitBits ? kMaxDigitBits : digit;
  int passes = n >= kThreePassMinRow ? 3 : 2;
  if (passes * digit > word_key_bits) {  // short keys (fp16/bf16): sort them whole
    passes = (word_key_bits + digit - 1) / digit;
    digit = (word_key_bits + passes - 1) / passes;
  }
  const int sorted = passes * digit < word_key_bits ? passes * digit : word_key_bits;
  return {passes, digit, sorted};
}

// Word layout for a key format: the top min(kBits, 32) key bits above a 32-bit column.
template <typename Format>
struct WordLayout {
  static constexpr int kKeyBits = Format::kBits < 32 ? Format::kBits : 32;
  static constexpr int kDropBits = Format::kBits - kKeyBits;  // fp64 keeps its top half
  static constexpr bool kWordIsWholeKey = kDropBits == 0;

  static Word pack(typename Format::Bits bits, int64_t column) {
    const Word key = Word(order_key<Format>(bits) >> kDropBits);
    return (key << (64 - kKeyBits)) | Word(uint32_t(column));
  }
  static uint32_t column(Word w) { return uint32_t(w); }
};

// Packs the row, then counts the digits of every pass. Counting is a loop of its own per
// pass: fused into the packing loop, runs of equal sign/exponent digits chain the
// counter increments through store forwarding and cost twice as much.
template <typename Format, int kPasses>
void pack_and_count(const typename Format::Bits* w, int64_t n, int low_bit, int digit_bits,
                    Word* words, uint32_t (*counts)[1 << kMaxDigitBits]) {
  const int buckets = 1 << digit_bits;
  const Word digit_mask = Word(buckets) - 1;
  for (int64_t i = 0; i < n; ++i) words[i] = WordLayout<Format>::pack(w[i], i);
  for (int p = 0; p < kPasses; ++p) {
    uint32_t* count = counts[p];
    for (int b = 0; b < buckets; ++b) count[b] = 0;
    const int shift = low_bit + p * digit_bits;
    for (int64_t i = 0; i < n; ++i) ++count[(words[i] >> shift) & digit_mask];
  }
}

// Stable LSD radix passes over counted digits; returns the buffer holding the result.
template <int kPasses>
Word* radix_passes(Word* words, Word* spare, int64_t n, int low_bit, int digit_bits,
                   uint32_t (*counts)[1 << kMaxDigitBits]) {
  const int buckets = 1 << digit_bits;
  const Word digit_mask = Word(buckets) - 1;
  Word* src = words;
  Word* dst = spare;
  for (int p = 0; p < kPasses; ++p) {
    const int shift = low_bit + p * digit_bits;
    uint32_t* count = counts[p];
    if (count[(src[0] >> shift) & digit_mask] == uint32_t(n)) continue;  // one bucket
    uint32_t offset = 0;
    for (int b = 0; b < buckets; ++b) {
      const uint32_t c = count[b];
      count[b] = offset;
      offset += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const Word v = src[i];
      dst[count[(v >> shift) & digit_mask]++] = v;
    }
    Word* t = src;
    src = dst;
    dst = t;
  }
  return src;
}

template <typename Format, int kPasses>
Word* pack_and_radix_sort(const typename Format::Bits* w, int64_t n, const RadixPlan& plan,
                          Word* words, Word* spare) {
  uint32_t counts[kPasses][1 << kMaxDigitBits];
  const int low_bit = 64 - plan.sorted_bits;
  pack_and_count<Format, kPasses>(w, n, low_bit, plan.digit_bits, words, counts);
  return radix_passes<kPasses>(words, spare, n, low_bit, plan.digit_bits, counts);
}

inline void insertion_sort(Word* words, int64_t n) {
  for (int64_t i = 1; i < n; ++i) {
    const Word v = words[i];
    int64_t j = i;
    for (; j > 0 && words[j - 1] > v; --j) words[j] = words[j - 1];
    words[j] = v;
  }
}

// Stable sort of a short run by `less`: insertion sort in blocks, then bottom-up merges
// (the left input wins ties) ping-ponging with `spare`.
template <typename Less>
void stable_sort_run(Word* run, int64_t len, Word* spare, Less less) {
  for (int64_t start = 0; start < len; start += kTieRunBlock) {
    const int64_t end = start + kTieRunBlock < len ? start + kTieRunBlock : len;
    for (int64_t k = start + 1; k < end; ++k) {
      const Word v = run[k];
      int64_t j = k;
      for (; j > start && less(v, run[j - 1]); --j) run[j] = run[j - 1];
      run[j] = v;
    }
  }
  Word* src = run;
  Word* dst = spare;
  for (int64_t width = kTieRunBlock; width < len; width *= 2) {
    for (int64_t lo = 0; lo < len; lo += 2 * width) {
      const int64_t mid = lo + width < len ? lo + width : len;
      const int64_t hi = lo + 2 * width < len ? lo + 2 * width : len;
      int64_t a = lo, b = mid, out = lo;
      while (a < mid && b < hi) dst[out++] = less(src[b], src[a]) ? src[b++] : src[a++];
      while (a < mid) dst[out++] = src[a++];
      while (b < hi) dst[out++] = src[b++];
    }
    Word* t = src;
    src = dst;
    dst = t;
  }
  if (src != run)
    for (int64_t k = 0; k < len; ++k) run[k] = src[k];
}

// Re-sorts, in contract order, each run of words whose top `sorted_bits` bits tie.
// Runs arrive in column order (the radix sort is stable).
template <typename Format>
void fix_tie_runs(Word* words, int64_t n, int sorted_bits, const typename Format::Bits* w,
                  Word* spare) {
  using Layout = WordLayout<Format>;
  const int tie_shift = 64 - sorted_bits;
  auto less = [w](Word a, Word b) {
    if (Layout::kWordIsWholeKey) return a < b;  // (key, column) order, exactly
    return order_key<Format>(w[Layout::column(a)]) < order_key<Format>(w[Layout::column(b)]);
  };
  int64_t i = 0;
  while (i + 1 < n) {
    if ((words[i] ^ words[i + 1]) >> tie_shift) {
      ++i;
      continue;
    }
    int64_t end = i + 2;
    while (end < n && ((words[end - 1] ^ words[end]) >> tie_shift) == 0) ++end;
    bool in_order = true;
    for (int64_t k = i + 1; k < end && in_order; ++k) in_order = !less(words[k], words[k - 1]);
    if (!in_order) stable_sort_run(words + i, end - i, spare, less);
    i = end;
  }
}

template <typename Format>
void rank_match_row(typename Format::Bits* w, const typename Format::Bits* s, int64_t n,
                    RowScratch scratch) {
  using Layout = WordLayout<Format>;
  if (n <= 1) {
    if (n == 1) w[0] = s[0];
    return;
  }
  Word* words = scratch.words;
  Word* spare = scratch.spare;
  int sorted_bits = Layout::kKeyBits;
  if (n <= kInsertionSortMaxRow) {
    for (int64_t i = 0; i < n; ++i) words[i] = Layout::pack(w[i], i);
    insertion_sort(words, n);
  } else {
    const RadixPlan plan = plan_radix(n, Layout::kKeyBits);
    sorted_bits = plan.sorted_bits;
    Word* sorted;
    switch (plan.passes) {
      case 1: sorted = pack_and_radix_sort<Format, 1>(w, n, plan, words, spare); break;
      case 2: sorted = pack_and_radix_sort<Format, 2>(w, n, plan, words, spare); break;
      default: sorted = pack_and_radix_sort<Format, 3>(w, n, plan, words, spare); break;
    }
    if (sorted != words) {
      spare = words;
      words = sorted;
    }
  }
  if (sorted_bits < Format::kBits) fix_tie_runs<Format>(words, n, sorted_bits, w, spare);
  for (int64_t i = 0; i < n; ++i) w[Layout::column(words[i])] = s[i];
}

template <typename Format>
void rank_match_rows(void* weight, const void* sorted_init, int64_t rows, int64_t row_len,
                     RowScratch scratch) {
  using Bits = typename Format::Bits;
  auto* w = static_cast<Bits*>(weight);
  const auto* s = static_cast<const Bits*>(sorted_init);
  for (int64_t r = 0; r < rows; ++r)
    rank_match_row<Format>(w + r * row_len, s + r * row_len, row_len, scratch);
}

}  // namespace

inline KernelTable make_kernel_table(const char* isa) {
  return {isa, &rank_match_rows<Float32Format>, &rank_match_rows<Float64Format>,
          &rank_match_rows<Float16Format>, &rank_match_rows<BFloat16Format>};
}

}  // namespace LAPERM_ISA
}  // namespace cpu
}  // namespace laperm
