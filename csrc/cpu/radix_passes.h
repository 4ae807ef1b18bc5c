// Stable LSD radix passes over packed words (32- or 64-bit), shared by both row paths.
//
// A fragment of row_kernel_impl.h, included inside its per-instruction-set namespace: it
// has no includes of its own and no include guard (each build includes it once).
#ifndef LAPERM_ROW_KERNEL_FRAGMENT
#error "radix_passes.h is a fragment of row_kernel_impl.h; include that instead"
#endif

constexpr int kMinDigitBits = 8;              // 256 buckets: counts come in blocks of 16
constexpr int kMaxDigitBits = 11;             // 2,048 buckets: 8 KiB of counters a pass
constexpr int64_t kPosBlock = 256;            // radix destinations computed a block ahead
constexpr int64_t kPrefetchBytes = 64;        // one cache line

inline int bit_width(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

// Radix digits of about log2(n) bits balance the two costs of a pass: moving n words, and
// clearing and scanning 2^digit counters.
inline int digit_bits_for(int64_t n) {
  const int digit = bit_width(uint64_t(n)) - 1;
  return digit < kMinDigitBits ? kMinDigitBits : digit > kMaxDigitBits ? kMaxDigitBits : digit;
}

// Digit d of every word: (word >> shift) & mask.
struct Digit {
  int shift;
  uint32_t mask;
};

using DigitCounts = uint32_t[1 << kMaxDigitBits];

// Asks for the cache lines of bytes [begin, end) (no fault on any address).
inline void prefetch_range(const void* begin, const void* end) {
  for (const char* p = static_cast<const char*>(begin); p < static_cast<const char*>(end);
       p += kPrefetchBytes)
    __builtin_prefetch(p, 0, 3);
}

// Counts the digits of `npass` passes in one read of the words. Meanwhile asks for the
// cache lines of `prefetch` (prefetch_bytes_per_word bytes per word read), which a later
// loop reads in random order, so it must be in cache by then.
template <typename W>
void count_digits(const W* __restrict words, int64_t n, const Digit* digits, int npass,
                  DigitCounts* __restrict counts, const void* prefetch,
                  int64_t prefetch_bytes_per_word) {
  for (int p = 0; p < npass; ++p)
    for (uint32_t b = 0; b <= digits[p].mask; ++b) counts[p][b] = 0;
  if (prefetch != nullptr) {
    const char* ahead = static_cast<const char*>(prefetch);
    prefetch_range(ahead, ahead + n * prefetch_bytes_per_word);
  }
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

// Turns counts into exclusive prefix sums (each bucket's first destination), in place.
// With SIMD, 16 (AVX-512) or 4 (AVX2) buckets a step: the scalar loop's add chain cost one
// cycle a bucket, as much as a pass over a row of a few hundred elements.
inline void exclusive_prefix_sums(uint32_t* count, uint32_t buckets) {
  uint32_t b = 0;
#if LAPERM_SIMD_LEVEL >= 2
  const __m512i zero = _mm512_setzero_si512();
  const __m512i last_lane = _mm512_set1_epi32(15);
  __m512i carry = zero;
  for (; b + 16 <= buckets; b += 16) {
    const __m512i x = _mm512_loadu_si512(count + b);
    // Inclusive scan in the register: add x shifted up by 1, 2, 4, 8 lanes.
    __m512i s = _mm512_add_epi32(x, _mm512_alignr_epi32(x, zero, 15));
    s = _mm512_add_epi32(s, _mm512_alignr_epi32(s, zero, 14));
    s = _mm512_add_epi32(s, _mm512_alignr_epi32(s, zero, 12));
    s = _mm512_add_epi32(s, _mm512_alignr_epi32(s, zero, 8));
    _mm512_storeu_si512(count + b, _mm512_add_epi32(carry, _mm512_sub_epi32(s, x)));
    carry = _mm512_add_epi32(carry, _mm512_permutexvar_epi32(last_lane, s));
  }
  uint32_t offset = uint32_t(_mm_cvtsi128_si32(_mm512_castsi512_si128(carry)));
#elif LAPERM_SIMD_LEVEL >= 1
  __m128i carry = _mm_setzero_si128();
  for (; b + 4 <= buckets; b += 4) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(count + b));
    __m128i s = _mm_add_epi32(x, _mm_slli_si128(x, 4));  // lanes shifted up by 1, then 2
    s = _mm_add_epi32(s, _mm_slli_si128(s, 8));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(count + b),
                     _mm_add_epi32(carry, _mm_sub_epi32(s, x)));
    carry = _mm_add_epi32(carry, _mm_shuffle_epi32(s, 0xff));
  }
  uint32_t offset = uint32_t(_mm_cvtsi128_si32(carry));
#else
  uint32_t offset = 0;
#endif
  for (; b < buckets; ++b) {
    const uint32_t c = count[b];
    count[b] = offset;
    offset += c;
  }
}

// One stable pass src -> dst by one digit; `count` holds the digit's counts on entry.
// Destinations are computed a block ahead: the one-loop form `dst[count[d]++] = v` makes
// each counter load wait for the previous store, whose address comes from a load; once
// the CPU's memory-dependence predictor sees a counter alias (frequent on clustered keys)
// that loop runs at load latency, 2.5-4x slower (measured on Zen 3).
// `visit(word, destination)` is called for every word moved (the last pass of a compact
// row scatters S there).
template <typename W, typename Visit>
void radix_pass(const W* src, W* dst, int64_t n, Digit d, uint32_t* count, Visit visit) {
  exclusive_prefix_sums(count, d.mask + 1);
  uint32_t pos[kPosBlock];
  for (int64_t start = 0; start < n; start += kPosBlock) {
    const int64_t len = n - start < kPosBlock ? n - start : kPosBlock;
    const W* block = src + start;
    // Digits first, in a loop that vectorises; then the serial counter updates.
    for (int64_t i = 0; i < len; ++i) pos[i] = uint32_t(block[i] >> d.shift) & d.mask;
    for (int64_t i = 0; i < len; ++i) pos[i] = count[pos[i]]++;
    for (int64_t i = 0; i < len; ++i) {
      dst[pos[i]] = block[i];
      visit(block[i], pos[i]);
    }
  }
}

struct NoVisit {
  template <typename W>
  void operator()(W, uint32_t) const {}
};

// Which of the counted passes change the order: a pass whose digit is the same for every
// word is skipped. Writes their indices to `passes`; returns how many.
template <typename W>
int passes_needed(const W* words, int64_t n, const Digit* digits, int npass,
                  const DigitCounts* counts, int* passes) {
  int needed = 0;
  for (int p = 0; p < npass; ++p)
    if (counts[p][(words[0] >> digits[p].shift) & digits[p].mask] != uint32_t(n))
      passes[needed++] = p;
  return needed;
}

// Runs the passes (skipping any whose digit is the same for every word); returns the
// buffer holding the result, `words` or `spare`. The last pass run calls `visit_last`.
template <typename W, typename Visit>
W* radix_sort(W* words, W* spare, int64_t n, const Digit* digits, int npass,
              Visit visit_last, bool* visited, const void* prefetch = nullptr,
              int64_t prefetch_bytes_per_word = 0) {
  DigitCounts counts[3];
  count_digits(words, n, digits, npass, counts, prefetch, prefetch_bytes_per_word);
  int passes[3];
  const int needed = passes_needed(words, n, digits, npass, counts, passes);
  W* src = words;
  W* dst = spare;
  for (int k = 0; k < needed; ++k) {
    const int p = passes[k];
    if (k + 1 == needed)
      radix_pass(src, dst, n, digits[p], counts[p], visit_last);
    else
      radix_pass(src, dst, n, digits[p], counts[p], NoVisit());
    W* t = src;
    src = dst;
    dst = t;
  }
  *visited = needed > 0;
  return src;
}
