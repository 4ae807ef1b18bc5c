// Warp class: one warp rank-matches one row of at most 64 elements in registers.
//
// Lane l holds columns l and l + 32. A row this short does not need a sort: each element's
// rank is the number of elements that precede it in the contract's order (smaller key, or
// equal key and smaller column), counted by broadcasting all 64 (key, column) pairs
// through 32 rounds of shuffles. Then W[column] = S[rank], each lane writing only the
// columns it read, so no barrier is needed. Padding (columns >= length) holds the largest
// key, and its columns come after every real one, so it never precedes a real element.
//
// 64 comparisons per element cost less than any sort at this size and touch no shared
// memory; global traffic is the minimum (W read, S gathered, W written once).
#include <type_traits>

#include "common/order_key.h"
#include "cuda/kernels.h"
#include "cuda/warp_rank.h"

namespace laperm {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = kWarpRowsThreads / 32;
static_assert(kWarpMaxLength == 64, "two elements per lane");

// __shfl_sync takes 32- and 64-bit integers; 16-bit keys travel widened.
template <typename Bits>
__device__ __forceinline__ Bits shuffle(Bits v, int lane) {
  using Wide = typename std::conditional<sizeof(Bits) == 8, unsigned long long, unsigned>::type;
  return static_cast<Bits>(__shfl_sync(0xffffffffu, static_cast<Wide>(v), lane));
}

template <typename Format>
__global__ void __launch_bounds__(kWarpRowsThreads)
rank_match_warp_rows(const RowDesc* __restrict__ rows, int64_t num_rows) {
  using Bits = typename Format::Bits;
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= num_rows) return;  // the whole warp leaves together: shuffles stay full-warp

  const RowDesc row = rows[r];
  Bits* __restrict__ w = reinterpret_cast<Bits*>(row.w_addr);
  const Bits* __restrict__ s = reinterpret_cast<const Bits*>(row.s_addr);
  const int n = static_cast<int>(row.length);
  const Bits pad = Bits(~Bits(0));
  const Bits lo = lane < n ? order_key<Format>(w[lane]) : pad;             // column lane
  const Bits hi = lane + 32 < n ? order_key<Format>(w[lane + 32]) : pad;   // column lane+32

  int rank_lo = 0, rank_hi = 0;
  for (int src = 0; src < 32; ++src) {
    const Bits a = shuffle(lo, src);  // column src
    const Bits b = shuffle(hi, src);  // column src + 32
    count_preceding(lo, hi, a, b, src, lane, rank_lo, rank_hi);
  }
  if (lane < n) w[lane] = s[rank_lo];
  if (lane + 32 < n) w[lane + 32] = s[rank_hi];
}

template <typename Format>
cudaError_t launch(const RowDesc* rows, int64_t num_rows, cudaStream_t stream) {
  if (num_rows <= 0) return cudaSuccess;
  const int64_t blocks = (num_rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > kMaxGridBlocks) return cudaErrorInvalidConfiguration;
  rank_match_warp_rows<Format><<<unsigned(blocks), kWarpRowsThreads, 0, stream>>>(rows, num_rows);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_warp_rows(ElementType type, const RowDesc* rows, int64_t num_rows,
                             cudaStream_t stream) {
  return dispatch_element_type(type, cudaErrorInvalidValue, [&](auto format) {
    return launch<decltype(format)>(rows, num_rows, stream);
  });
}

}  // namespace cuda
}  // namespace laperm
