// The warp class's ranking rule, shared by the kernel (warp_rows.cu) and its CPU
// emulation (testing/emulated_launcher.cpp), where the tests run it.
//
// A lane holds the keys of columns `lane` (lo) and `lane + 32` (hi). Seeing the keys of
// columns `src` (a) and `src + 32` (b) of the same row, it counts those that precede its
// own in the contract's order: a smaller key, or an equal key in a smaller column.
#pragma once

#include "common/order_key.h"

namespace laperm {
namespace cuda {

template <typename Bits>
LAPERM_HOST_DEVICE void count_preceding(Bits lo, Bits hi, Bits a, Bits b, int src, int lane,
                                        int& rank_lo, int& rank_hi) {
  rank_lo += (a < lo) | ((a == lo) & (src < lane));
  rank_lo += b < lo;   // column src + 32 > lane: an equal key comes after
  rank_hi += a <= hi;  // column src < lane + 32: an equal key comes before
  rank_hi += (b < hi) | ((b == hi) & (src < lane));
}

}  // namespace cuda
}  // namespace laperm
