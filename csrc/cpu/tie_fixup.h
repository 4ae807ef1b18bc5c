// Tie fix-up, shared by both row paths: after a radix sort by the top bits of a key,
// runs of words whose sorted bits tie are re-sorted by the full key.
//
// A fragment of row_kernel_impl.h, included inside its per-instruction-set namespace: it
// has no includes of its own and no include guard (each build includes it once).
#ifndef LAPERM_ROW_KERNEL_FRAGMENT
#error "tie_fixup.h is a fragment of row_kernel_impl.h; include that instead"
#endif

constexpr int64_t kTieRunBlock = 16;  // tie runs are insertion-sorted in blocks
constexpr int kTieScanBlock = 16;     // adjacent pairs checked at once for ties

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

#if LAPERM_SIMD_LEVEL >= 2
// The compact path's words, all 16 pairs in one register (gcc does not vectorise the
// loop above).
inline int first_tie_in_block(const uint32_t* words, int tie_shift) {
  static_assert(kTieScanBlock == 16, "one register of pairs");
  const __m512i a = _mm512_loadu_si512(words);
  const __m512i b = _mm512_loadu_si512(words + 1);
  const __m512i differing = _mm512_srl_epi32(_mm512_xor_si512(a, b), _mm_cvtsi32_si128(tie_shift));
  const uint32_t ties = _mm512_cmpeq_epi32_mask(differing, _mm512_setzero_si512());
  return ties ? __builtin_ctz(ties) : kTieScanBlock;
}
#elif LAPERM_SIMD_LEVEL >= 1
// The compact path's words, 8 pairs a register.
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
// `fixed(begin, end)` is called for each run [begin, end) whose order changed.
// `spare` holds at least n words.
// Returns false, leaving the words partly fixed, if a run longer than `max_sort` needs
// sorting (the caller then has a faster way than a comparison sort of a long run).
template <typename W, typename Less, typename Fixed>
bool fix_tie_runs(W* words, int64_t n, int tie_shift, W* spare, int64_t max_sort, Less less,
                  Fixed fixed) {
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
        fixed(i, end);
      }
    } else {
      bool in_order = true;
      for (int64_t k = i + 1; k < end && in_order; ++k) in_order = !less(words[k], words[k - 1]);
      if (!in_order) {
        if (end - i > max_sort) return false;
        stable_sort_run(words + i, end - i, spare, less);
        fixed(i, end);
      }
    }
    i = end;
  }
  return true;
}

struct NoFix {
  void operator()(int64_t, int64_t) const {}
};
