// The largest magnitude of n elements, as bits: laperm::max_abs's inner loop.
//
// A fragment of row_kernel_impl.h, included inside its per-instruction-set namespace: it
// has no includes of its own and no include guard (each build includes it once).
//
// With the sign bit cleared, the unsigned order of a float's bits is the order of |x|,
// and every NaN lies above +inf: one integer max, which vectorises (vpmaxu*), replaces a
// float compare and a NaN test per element, whose select chain ran at ~4 cycles an element.
#ifndef LAPERM_ROW_KERNEL_FRAGMENT
#error "max_magnitude.h is a fragment of row_kernel_impl.h; include that instead"
#endif

template <typename Bits>
uint64_t max_magnitude(const void* x, int64_t n) noexcept {
  constexpr Bits kMagnitudeMask = Bits(~Bits(Bits(1) << (8 * sizeof(Bits) - 1)));
  const Bits* __restrict bits = static_cast<const Bits*>(x);
  Bits largest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Bits m = Bits(bits[i] & kMagnitudeMask);
    largest = m > largest ? m : largest;
  }
  return largest;
}
