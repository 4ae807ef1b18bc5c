// The CPU rank-matching kernel: one stable sort per row, then W[order[i]] = S[i].
//
// Design (one row of n elements, any float dtype). Rows of up to kCompactMaxRow elements
// (every weight row of common CNNs and transformers) take the compact path:
//   1. Map. Each value gets a coordinate c of Ks bits (Ks = 16..22), monotone
//      non-decreasing in the contract's order: 16-bit dtypes use their whole order key;
//      fp32/fp64 use sign | clamped magnitude (see CompactMap): magnitudes below
//      max/2^kCompactBands collapse onto the floor, and the top Ks-1 bits of what is left
//      spend the coordinate on the row's own range of exponents, not on all 256 of them.
//      For Gaussian-like weights, two distinct values share c for ~1-3% of the elements
//      (mostly in pairs), where the raw top 19 bits of the order key would tie for ~40%.
//   2. Pack. Element i becomes one 32-bit word c << b | i, b = bit_width(n - 1).
//   3. Sort the words by c with a stable two-pass LSD radix sort (digits of Ks/2 bits).
//      Each pass first computes every word's destination (pos = count[digit]++) into a
//      small block, then moves the block. The single-loop form `dst[count[d]++] = v`
//      makes each counter load wait for the previous store, whose address comes from a
//      load: once the CPU's memory-dependence predictor sees a counter alias (frequent on
//      clustered keys) the loop runs at load latency, 2.5-4x slower (measured on Zen 3).
//   4. Fix up. Runs of words with equal c (in column order: the sort is stable) are
//      re-sorted by the full order key, recomputed from W (still intact). Ties are found
//      16 pairs at a time (AVX2 compares where built for it); a pair is one compare-swap;
//      a run already in order (equal values, such as pruned zeros) costs one scan.
//   5. Scatter. W[column of word i] = S[i].
// Longer rows, and the rare row whose values crowd into a few coordinates (step 4 finds a
// long tie run out of order; W is still intact then), take the wide path: 64-bit words
// (the top 32 key bits above a 32-bit column), two or three LSD passes of 8-11 bit
// digits, the same fix-up on 64-bit words. Rows of up to kInsertionSortMaxRow elements
// take it too, with an insertion sort.
// Scratch is the driver's two buffers of n 64-bit words (row_kernel.h); the compact path
// uses half of each, but may fall back to the wide path, which uses all of it.
//
// This file is compiled once per instruction set (row_kernel_{avx512,avx2,generic}.cpp),
// each defining LAPERM_ISA as its own namespace, with `#pragma GCC target` in force.
// Everything here has internal linkage and no STL is included, so no out-of-line copy
// built for one instruction set can be picked by the linker for another.

#ifndef LAPERM_ISA
#error "define LAPERM_ISA (a namespace name) before including row_kernel_impl.h"
#endif

#include <cstdint>
#if defined(__AVX2__)
#include <immintrin.h>  // intrinsics are always-inline: no out-of-line copies to merge
#endif

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
constexpr int64_t kThreePassMinRow = 65536;   // wide rows this long sort 3 digits, not 2
constexpr int64_t kTieRunBlock = 16;          // tie runs are insertion-sorted in blocks
constexpr int kTieScanBlock = 16;            // adjacent pairs checked at once for ties
constexpr int64_t kPosBlock = 256;            // radix destinations computed a block ahead

// Compact path: rows up to 2^14 keep >= 18 coordinate bits in a 32-bit word.
constexpr int64_t kCompactMaxRow = int64_t(1) << 14;
// fp32/fp64 coordinates span the top 2^kCompactLog2Bands binades below the row's largest
// magnitude; smaller magnitudes tie on the floor coordinate (and are fixed up).
constexpr int kCompactLog2Bands = 4;
// A compact row needing a comparison sort of a longer tie run goes to the wide path.
constexpr int64_t kCompactMaxTieSort = 256;

inline int bit_width(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

// Radix digits of about log2(n) bits balance the two costs of a pass: moving n words, and
// clearing and scanning 2^digit counters.
inline int digit_bits_for(int64_t n) {
  const int digit = bit_width(uint64_t(n)) - 1;
  return digit < kMinDigitBits ? kMinDigitBits : digit > kMaxDigitBits ? kMaxDigitBits : digit;
}

// ---------------------------------------------------------------------------------------
// Stable LSD radix passes, shared by both paths.

// Digit d of every word: (word >> shift) & mask.
struct Digit {
  int shift;
  uint32_t mask;
};

// Counts the digits of `npass` passes in one read of the words.
template <typename W>
void count_digits(const W* words, int64_t n, const Digit* digits, int npass,
                  uint32_t (*counts)[1 << kMaxDigitBits]) {
  for (int p = 0; p < npass; ++p)
    for (uint32_t b = 0; b <= digits[p].mask; ++b) counts[p][b] = 0;
  if (npass == 2) {
    const Digit d0 = digits[0], d1 = digits[1];
    for (int64_t i = 0; i < n; ++i) {
      const W v = words[i];
      ++counts[0][(v >> d0.shift) & d0.mask];
      ++counts[1][(v >> d1.shift) & d1.mask];
    }
    return;
  }
  for (int p = 0; p < npass; ++p)
    for (int64_t i = 0; i < n; ++i) ++counts[p][(words[i] >> digits[p].shift) & digits[p].mask];
}

// One stable pass src -> dst by one digit; `count` holds the digit's counts on entry.
// Destinations are computed a block ahead (see the header comment for why).
template <typename W>
void radix_pass(const W* src, W* dst, int64_t n, Digit d, uint32_t* count) {
  uint32_t offset = 0;
  for (uint32_t b = 0; b <= d.mask; ++b) {
    const uint32_t c = count[b];
    count[b] = offset;
    offset += c;
  }
  uint32_t pos[kPosBlock];
  for (int64_t start = 0; start < n; start += kPosBlock) {
    const int64_t len = n - start < kPosBlock ? n - start : kPosBlock;
    const W* block = src + start;
    // Digits first, in a loop that vectorises; then the serial counter updates.
    for (int64_t i = 0; i < len; ++i) pos[i] = uint32_t(block[i] >> d.shift) & d.mask;
    for (int64_t i = 0; i < len; ++i) pos[i] = count[pos[i]]++;
    for (int64_t i = 0; i < len; ++i) dst[pos[i]] = block[i];
  }
}

// Runs the passes (skipping any whose digit is the same for every word); returns the
// buffer holding the result, `words` or `spare`.
template <typename W>
W* radix_sort(W* words, W* spare, int64_t n, const Digit* digits, int npass) {
  uint32_t counts[3][1 << kMaxDigitBits];
  count_digits(words, n, digits, npass, counts);
  W* src = words;
  W* dst = spare;
  for (int p = 0; p < npass; ++p) {
    if (counts[p][(src[0] >> digits[p].shift) & digits[p].mask] == uint32_t(n)) continue;
    radix_pass(src, dst, n, digits[p], counts[p]);
    W* t = src;
    src = dst;
    dst = t;
  }
  return src;
}

// ---------------------------------------------------------------------------------------
// Tie fix-up, shared by both paths.

// Stable sort of a short run by `less`: insertion sort in blocks, then bottom-up merges
// (the left input wins ties) ping-ponging with `spare`.
template <typename W, typename Less>
void stable_sort_run(W* run, int64_t len, W* spare, Less less) {
  for (int64_t start = 0; start < len; start += kTieRunBlock) {
    const int64_t end = start + kTieRunBlock < len ? start + kTieRunBlock : len;
    for (int64_t k = start + 1; k < end; ++k) {
      const W v = run[k];
      int64_t j = k;
      for (; j > start && less(v, run[j - 1]); --j) run[j] = run[j - 1];
      run[j] = v;
    }
  }
  W* src = run;
  W* dst = spare;
  for (int64_t width = kTieRunBlock; width < len; width *= 2) {
    for (int64_t lo = 0; lo < len; lo += 2 * width) {
      const int64_t mid = lo + width < len ? lo + width : len;
      const int64_t hi = lo + 2 * width < len ? lo + 2 * width : len;
      int64_t a = lo, b = mid, out = lo;
      while (a < mid && b < hi) dst[out++] = less(src[b], src[a]) ? src[b++] : src[a++];
      while (a < mid) dst[out++] = src[a++];
      while (b < hi) dst[out++] = src[b++];
    }
    W* t = src;
    src = dst;
    dst = t;
  }
  if (src != run)
    for (int64_t k = 0; k < len; ++k) run[k] = src[k];
}

// Index of the first of the kTieScanBlock adjacent pairs starting at `words` whose bits
// above `tie_shift` are equal, or kTieScanBlock if none is. Ties are rare (a few percent
// of the words): checking a block at once, not branching on every pair, saves the
// mispredictions and most of the work.
template <typename W>
int first_tie_in_block(const W* words, int tie_shift) {
  uint32_t ties = 0;
  for (int k = 0; k < kTieScanBlock; ++k)
    ties |= uint32_t(((words[k] ^ words[k + 1]) >> tie_shift) == 0) << k;
  return ties ? __builtin_ctz(ties) : kTieScanBlock;
}

#if defined(__AVX2__)
// The compact path's words, 8 pairs a register (gcc does not vectorise the loop above).
inline int first_tie_in_block(const uint32_t* words, int tie_shift) {
  static_assert(kTieScanBlock == 16, "two registers of pairs");
  const __m128i shift = _mm_cvtsi32_si128(tie_shift);
  const __m256i zero = _mm256_setzero_si256();
  uint32_t ties = 0;
  for (int k = 0; k < kTieScanBlock; k += 8) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + k + 1));
    const __m256i differing = _mm256_srl_epi32(_mm256_xor_si256(a, b), shift);
    const __m256i tied = _mm256_cmpeq_epi32(differing, zero);
    ties |= uint32_t(_mm256_movemask_ps(_mm256_castsi256_ps(tied))) << k;
  }
  return ties ? __builtin_ctz(ties) : kTieScanBlock;
}
#endif

// Re-sorts by `less` each run of words whose bits above `tie_shift` are equal. Runs arrive
// in column order (the radix sort is stable), so `less` need not look at columns.
// `spare` holds at least n words.
// Returns false, leaving the words partly fixed, if a run longer than `max_sort` needs
// sorting (the caller then has a faster way than a comparison sort of a long run).
template <typename W, typename Less>
bool fix_tie_runs(W* words, int64_t n, int tie_shift, W* spare, int64_t max_sort, Less less) {
  auto ties_next = [words, tie_shift](int64_t i) {
    return ((words[i] ^ words[i + 1]) >> tie_shift) == 0;
  };
  int64_t i = 0;
  while (i + 1 < n) {
    if (i + kTieScanBlock < n) {  // skip to the next tie, a block at a time
      const int k = first_tie_in_block(words + i, tie_shift);
      i += k;
      if (k == kTieScanBlock) continue;
    } else if (!ties_next(i)) {
      ++i;
      continue;
    }
    int64_t end = i + 2;
    while (end < n && ties_next(end - 1)) ++end;
    if (end - i == 2) {  // the common case: a pair
      if (less(words[i + 1], words[i])) {
        const W t = words[i];
        words[i] = words[i + 1];
        words[i + 1] = t;
      }
    } else {
      bool in_order = true;
      for (int64_t k = i + 1; k < end && in_order; ++k) in_order = !less(words[k], words[k - 1]);
      if (!in_order) {
        if (end - i > max_sort) return false;
        stable_sort_run(words + i, end - i, spare, less);
      }
    }
    i = end;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Compact path: 32-bit words.

// Coordinate of a value for the compact path, monotone non-decreasing in the contract's
// order (so sorting by it, then fixing up its ties by the full key, is exact).
template <typename Format, bool kExact = (Format::kBits <= 16)>
struct CompactMap;

// 16-bit dtypes: the order key itself, exact (no fix-up needed).
template <typename Format>
struct CompactMap<Format, true> {
  using Bits = typename Format::Bits;
  static constexpr bool kExactKey = true;
  CompactMap(const Bits*, int64_t, int coord_bits) { (void)coord_bits; }
  static int coord_bits(int64_t, int available) { return available < 16 ? available : 16; }
  uint32_t operator()(Bits bits) const { return order_key<Format>(bits); }
};

// fp32/fp64: c = 2^(Ks-1) + t for non-negatives, 2^(Ks-1) - 1 - t for negatives, where
// t = (max(|x|bits, floor) - floor) >> shift. The floor sits 2^(Ks-1+shift) magnitude
// steps below the row's largest magnitude (NaN counting as the largest), so t always
// fits Ks-1 bits; shift is chosen so that span covers 2^kCompactLog2Bands binades.
template <typename Format>
struct CompactMap<Format, false> {
  using Bits = typename Format::Bits;
  static constexpr bool kExactKey = false;
  static constexpr int kMantissaBits = Format::kBits == 64 ? 52 : 23;
  static constexpr Bits kMagnitudeMask = Bits(~Format::kSignBit);
  static constexpr Bits kQuietNaNMagnitude = Bits(Format::kQuietNaN & kMagnitudeMask);

  Bits floor;
  int shift;
  uint32_t middle;      // 2^(Ks-1)
  uint32_t coord_mask;  // 2^Ks - 1

  // Two digits (digit_bits_for), as far as the word allows.
  static int coord_bits(int64_t n, int available) {
    const int digit = digit_bits_for(n);
    return 2 * digit < available ? 2 * digit : available;
  }

  // Canonical magnitude: all NaNs become the quiet NaN, above +inf.
  static Bits magnitude(Bits bits) {
    const Bits m = Bits(bits & kMagnitudeMask);
    return m > Format::kInf ? kQuietNaNMagnitude : m;
  }

  CompactMap(const Bits* w, int64_t n, int coord_bits) {
    Bits largest = 0;
    for (int64_t i = 0; i < n; ++i) {
      const Bits m = magnitude(w[i]);
      largest = m > largest ? m : largest;
    }
    const int span_bits = kMantissaBits + kCompactLog2Bands;
    shift = span_bits - (coord_bits - 1);
    shift = shift < 0 ? 0 : shift;
    const Bits span = Bits(Bits(1) << (coord_bits - 1 + shift));  // < 2^(kBits-1)
    floor = largest >= span ? Bits(largest - span + 1) : Bits(0);
    middle = uint32_t(1) << (coord_bits - 1);
    coord_mask = (middle << 1) - 1;
  }

  uint32_t operator()(Bits bits) const {
    const Bits m = magnitude(bits);
    const uint32_t t = uint32_t(Bits((m > floor ? m : floor) - floor) >> shift);
    // Negative: sign set and a non-zero number (-0.0 ties +0.0; every NaN sorts last).
    // middle - 1 - t is (middle + t) with its Ks bits flipped: written as masks, no
    // branch, so the packing loop vectorises.
    const bool negative = (bits & Format::kSignBit) && Bits(m - 1) < Format::kInf;
    return (middle + t) ^ ((uint32_t(0) - uint32_t(negative)) & coord_mask);
  }
};

// Packs words c << b | i and sorts them by c; returns the buffer holding the result.
template <typename Format>
uint32_t* compact_sort(const typename Format::Bits* __restrict w, int64_t n, int column_bits,
                       uint32_t* __restrict words, uint32_t* spare, int* coord_bits_out) {
  using Map = CompactMap<Format>;
  const int coord_bits = Map::coord_bits(n, 32 - column_bits);
  const Map map(w, n, coord_bits);
  for (int64_t i = 0; i < n; ++i) words[i] = (map(w[i]) << column_bits) | uint32_t(i);
  const int low_digit = coord_bits / 2;
  const Digit digits[2] = {{column_bits, (uint32_t(1) << low_digit) - 1},
                           {column_bits + low_digit,
                            (uint32_t(1) << (coord_bits - low_digit)) - 1}};
  *coord_bits_out = coord_bits;
  return radix_sort(words, spare, n, digits, 2);
}

// Returns false, with W untouched, for a row whose values crowd into few coordinates
// (say one huge outlier above a bulk 2^16 times smaller): the wide path then does it.
template <typename Format>
bool compact_rank_match_row(typename Format::Bits* w, const typename Format::Bits* s,
                            int64_t n, RowScratch scratch) {
  using Bits = typename Format::Bits;
  const int column_bits = bit_width(uint64_t(n - 1));
  uint32_t* words = static_cast<uint32_t*>(scratch.words);
  uint32_t* spare = static_cast<uint32_t*>(scratch.spare);
  int coord_bits;
  uint32_t* sorted = compact_sort<Format>(w, n, column_bits, words, spare, &coord_bits);
  if (sorted != words) spare = words;
  const uint32_t column_mask = (uint32_t(1) << column_bits) - 1;
  if (!CompactMap<Format>::kExactKey) {
    const Bits* wc = w;
    const bool fixed = fix_tie_runs(sorted, n, column_bits, spare, kCompactMaxTieSort,
                                    [wc, column_mask](uint32_t a, uint32_t b) {
      return order_key<Format>(wc[a & column_mask]) < order_key<Format>(wc[b & column_mask]);
    });
    if (!fixed) return false;
  }
  for (int64_t i = 0; i < n; ++i) w[sorted[i] & column_mask] = s[i];
  return true;
}

// ---------------------------------------------------------------------------------------
// Wide path: 64-bit words, for long rows (and rows too short for a radix sort).

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

// Two (or, for long rows, three) digits of digit_bits_for(n) bits over the top key bits.
// Returns the number of top key bits sorted.
inline int plan_wide_radix(int64_t n, int word_key_bits, Digit* digits, int* npass) {
  int digit = digit_bits_for(n);
  int passes = n >= kThreePassMinRow ? 3 : 2;
  if (passes * digit > word_key_bits) {  // short keys (fp16/bf16): sort them whole
    passes = (word_key_bits + digit - 1) / digit;
    digit = (word_key_bits + passes - 1) / passes;
  }
  const int sorted = passes * digit < word_key_bits ? passes * digit : word_key_bits;
  for (int p = 0; p < passes; ++p) digits[p] = {64 - sorted + p * digit, (1u << digit) - 1};
  *npass = passes;
  return sorted;
}

inline void insertion_sort(Word* words, int64_t n) {
  for (int64_t i = 1; i < n; ++i) {
    const Word v = words[i];
    int64_t j = i;
    for (; j > 0 && words[j - 1] > v; --j) words[j] = words[j - 1];
    words[j] = v;
  }
}

template <typename Format>
void wide_rank_match_row(typename Format::Bits* w, const typename Format::Bits* s, int64_t n,
                         RowScratch scratch) {
  using Layout = WordLayout<Format>;
  Word* words = static_cast<Word*>(scratch.words);
  Word* spare = static_cast<Word*>(scratch.spare);
  for (int64_t i = 0; i < n; ++i) words[i] = Layout::pack(w[i], i);
  int sorted_bits = Layout::kKeyBits;
  if (n <= kInsertionSortMaxRow) {
    insertion_sort(words, n);
  } else {
    Digit digits[3];
    int npass;
    sorted_bits = plan_wide_radix(n, Layout::kKeyBits, digits, &npass);
    Word* sorted = radix_sort(words, spare, n, digits, npass);
    if (sorted != words) {
      spare = words;
      words = sorted;
    }
  }
  if (sorted_bits < Format::kBits) {
    const typename Format::Bits* wc = w;
    fix_tie_runs(words, n, 64 - sorted_bits, spare, n, [wc](Word a, Word b) {
      if (Layout::kWordIsWholeKey) return a < b;  // (key, column) order, exactly
      return order_key<Format>(wc[Layout::column(a)]) < order_key<Format>(wc[Layout::column(b)]);
    });
  }
  for (int64_t i = 0; i < n; ++i) w[Layout::column(words[i])] = s[i];
}

// ---------------------------------------------------------------------------------------

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

inline KernelTable make_kernel_table(const char* isa) {
  return {isa, &rank_match_rows<Float32Format>, &rank_match_rows<Float64Format>,
          &rank_match_rows<Float16Format>, &rank_match_rows<BFloat16Format>};
}

}  // namespace LAPERM_ISA
}  // namespace cpu
}  // namespace laperm
