// The compact path: rows of 33 to kCompactMaxRow elements sorted as 32-bit words.
//
// A fragment of row_kernel_impl.h, included inside its per-instruction-set namespace: it
// has no includes of its own and no include guard (each build includes it once).
#ifndef LAPERM_ROW_KERNEL_FRAGMENT
#error "compact_path.h is a fragment of row_kernel_impl.h; include that instead"
#endif

// Rows up to 2^14 keep >= 18 coordinate bits in a 32-bit word.
constexpr int64_t kCompactMaxRow = int64_t(1) << 14;
// fp32/fp64 coordinates span the top 2^kCompactLog2Bands binades below the row's largest
// magnitude; smaller magnitudes tie on the floor coordinate (and are fixed up).
constexpr int kCompactLog2Bands = 4;
// A compact row needing a comparison sort of a longer tie run goes to the wide path.
constexpr int64_t kCompactMaxTieSort = 256;

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

// Rank-matches one row of n elements (kInsertionSortMaxRow < n <= kCompactMaxRow):
//   1. pack element i as the word c << b | i (c its coordinate, b = bit_width(n - 1));
//      fp32/fp64 also copy W's bits to scratch.spare (`original`);
//   2. sort the words by c, two stable LSD passes; the last pass also scatters,
//      W[column] = S[destination] (S's lines are prefetched while the digits are counted);
//   3. fp32/fp64: re-sort each run of words with equal c by the full order key of
//      `original`, and scatter S again over the runs whose order changed.
// Scratch: scratch.words holds the words and the pass buffer (32-bit, n each),
// scratch.spare the original bits.
// Returns false, with W as it came in, for a row whose values crowd into few coordinates
// (say one huge outlier above a bulk 2^16 times smaller): the wide path then does it.
template <typename Format>
bool compact_rank_match_row(typename Format::Bits* w, const typename Format::Bits* s,
                            int64_t n, RowScratch scratch) {
  using Bits = typename Format::Bits;
  using Map = CompactMap<Format>;
  const int column_bits = bit_width(uint64_t(n - 1));
  const uint32_t column_mask = (uint32_t(1) << column_bits) - 1;
  uint32_t* __restrict words = static_cast<uint32_t*>(scratch.words);
  uint32_t* spare = words + n;
  Bits* __restrict original = static_cast<Bits*>(scratch.spare);

  const int coord_bits = Map::coord_bits(n, 32 - column_bits);
  const Map map(w, n, coord_bits);
  if (Map::kExactKey) {
    for (int64_t i = 0; i < n; ++i) words[i] = (map(w[i]) << column_bits) | uint32_t(i);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const Bits bits = w[i];
      original[i] = bits;
      words[i] = (map(bits) << column_bits) | uint32_t(i);
    }
  }

  const int low_digit = coord_bits / 2;
  const Digit digits[2] = {{column_bits, (uint32_t(1) << low_digit) - 1},
                           {column_bits + low_digit,
                            (uint32_t(1) << (coord_bits - low_digit)) - 1}};
  auto scatter = [w, s, column_mask](uint32_t word, uint32_t destination) {
    w[word & column_mask] = s[destination];
  };
  bool scattered;
  uint32_t* sorted = radix_sort(words, spare, n, digits, 2, scatter, &scattered, s,
                                int64_t(sizeof(Bits)));
  if (!scattered)  // every word had the same coordinate: no pass ran
    for (int64_t i = 0; i < n; ++i) scatter(sorted[i], uint32_t(i));
  if (Map::kExactKey) return true;

  const Bits* from = original;
  const bool fixed = fix_tie_runs(
      sorted, n, column_bits, sorted == words ? spare : words, kCompactMaxTieSort,
      [from, column_mask](uint32_t a, uint32_t b) {
        return order_key<Format>(from[a & column_mask]) < order_key<Format>(from[b & column_mask]);
      },
      [sorted, scatter](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) scatter(sorted[i], uint32_t(i));
      });
  if (!fixed)
    for (int64_t i = 0; i < n; ++i) w[i] = original[i];
  return fixed;
}
