// The wide path: 64-bit words (top 32 key bits, 32-bit column), for rows too long for
// the compact path or too short for a radix sort, and the compact path's rare fall-back.
//
// A fragment of row_kernel_impl.h, included inside its per-instruction-set namespace: it
// has no includes of its own and no include guard (each build includes it once).
#ifndef LAPERM_ROW_KERNEL_FRAGMENT
#error "wide_path.h is a fragment of row_kernel_impl.h; include that instead"
#endif

using Word = uint64_t;

constexpr int64_t kInsertionSortMaxRow = 32;  // shorter rows skip the radix sort
constexpr int64_t kThreePassMinRow = 65536;   // wide rows this long sort 3 digits, not 2

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
    bool moved;
    sorted_bits = plan_wide_radix(n, Layout::kKeyBits, digits, &npass);
    Word* sorted = radix_sort(words, spare, n, digits, npass, NoVisit(), &moved);
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
    }, NoFix());
  }
  for (int64_t i = 0; i < n; ++i) w[Layout::column(words[i])] = s[i];
}
