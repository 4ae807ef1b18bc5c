// Block class: one thread block rank-matches one row of up to TILE = THREADS * ITEMS
// elements, entirely on chip.
//
//   1. load:    W's row, coalesced (cub::BlockLoad, warp-transposed into a blocked
//               arrangement), each value turned into its order key (common/order_key.h);
//               the padding past the row's end gets the largest key;
//   2. sort:    (key, column) pairs by cub::BlockRadixSort over the key's bits. The sort is
//               stable and the input is in column order, so ties stay in column order:
//               exactly the contract's order. SortBlockedToStriped leaves rank
//               j * THREADS + t in thread t's item j;
//   3. scatter: W[column] = S[rank] for every rank < length: S is read coalesced (striped
//               ranks), W written within its own row (an L2-resident scatter).
// Padding keys are the largest key and padding columns come after every real column, so
// a stable sort puts every pad after every real element even when a real key is maximal.
//
// Global memory traffic is the minimum: W read once, S read once, W written once. The
// cost is the sort: ceil(key bits / 4) passes of CUB's 4-bit radix ranking in shared
// memory over the padded tile (docs/cuda.md has the performance model).
//
// The kernel reads one RowDesc per block, allocates nothing and never synchronises with
// the host: launches are graph-capturable.
#pragma once

#include <cub/block/block_load.cuh>
#include <cub/block/block_radix_sort.cuh>

#include <cstddef>
#include <utility>

#include "common/order_key.h"
#include "cuda/block_rows.h"
#include "cuda/kernels.h"

namespace laperm {
namespace cuda {

template <typename Format, int THREADS, int ITEMS>
struct BlockRows {
  using Bits = typename Format::Bits;
  using Column = uint16_t;  // tiles hold at most 65536 elements
  static constexpr int kTile = THREADS * ITEMS;
  static_assert(kTile <= 65536, "columns are 16-bit");

  using Load = cub::BlockLoad<Bits, THREADS, ITEMS, cub::BLOCK_LOAD_WARP_TRANSPOSE>;
  using Sort = cub::BlockRadixSort<Bits, THREADS, ITEMS, Column>;
  union TempStorage {
    typename Load::TempStorage load;
    typename Sort::TempStorage sort;
  };
  static constexpr int64_t kSmemBytes = sizeof(TempStorage);
  static_assert(kSmemBytes <= block_tile_smem_bytes(kTile, THREADS, sizeof(Bits)),
                "size_classes.h's shared-memory bound is below what this tile needs");
};

template <typename Format, int THREADS, int ITEMS>
__global__ void __launch_bounds__(THREADS)
rank_match_block_rows(const RowDesc* __restrict__ rows) {
  using Rows = BlockRows<Format, THREADS, ITEMS>;
  using Bits = typename Rows::Bits;
  using Column = typename Rows::Column;
  // Dynamic shared memory: tiles past 48 KiB need the opt-in the host sets at launch.
  extern __shared__ __align__(16) unsigned char smem[];
  auto& temp = *reinterpret_cast<typename Rows::TempStorage*>(smem);

  const RowDesc row = rows[blockIdx.x];
  Bits* __restrict__ w = reinterpret_cast<Bits*>(row.w_addr);
  const Bits* __restrict__ s = reinterpret_cast<const Bits*>(row.s_addr);
  const int n = static_cast<int>(row.length);  // <= kTile, checked by the planner

  Bits keys[ITEMS];
  Column columns[ITEMS];
  typename Rows::Load(temp.load).Load(w, keys, n, Bits(0));
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int column = threadIdx.x * ITEMS + j;  // blocked arrangement after the load
    columns[j] = static_cast<Column>(column);
    keys[j] = column < n ? order_key<Format>(keys[j]) : Bits(~Bits(0));
  }
  __syncthreads();  // the sort reuses the load's shared memory

  typename Rows::Sort(temp.sort).SortBlockedToStriped(keys, columns, 0, Format::kBits);

  // Every thread's loads of W happened before the sort's barriers: writing W is safe.
#pragma unroll
  for (int j = 0; j < ITEMS; ++j) {
    const int rank = j * THREADS + threadIdx.x;
    if (rank < n) w[columns[j]] = s[rank];
  }
}

// --- host side ------------------------------------------------------------------------

template <typename Format, int TILE_INDEX>
struct Tile {
  static constexpr BlockTile kShape = kBlockTiles[TILE_INDEX];
  using Rows = BlockRows<Format, kShape.threads, kShape.items>;
  static_assert(Rows::kTile == kShape.tile, "threads * items must equal the tile");

  static cudaError_t launch(const RowDesc* rows, int64_t num_rows, cudaStream_t stream) {
    if (num_rows <= 0) return cudaSuccess;
    if (num_rows > kMaxBlockClassRows) return cudaErrorInvalidConfiguration;
    auto* kernel = rank_match_block_rows<Format, kShape.threads, kShape.items>;
    const int smem = static_cast<int>(Rows::kSmemBytes);
    if (smem > 48 * 1024) {  // beyond the default per-block limit: opt in
      const cudaError_t err =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      if (err != cudaSuccess) return err;
    }
    kernel<<<unsigned(num_rows), kShape.threads, smem, stream>>>(rows);
    return cudaGetLastError();
  }
};

// Every tile of one dtype: tables of its Tile<Format, t> entry points, indexed by tile.
template <typename Format, size_t... T>
cudaError_t launch_tile(int tile_index, const RowDesc* rows, int64_t num_rows,
                        cudaStream_t stream, std::index_sequence<T...>) {
  using Launch = cudaError_t (*)(const RowDesc*, int64_t, cudaStream_t);
  static constexpr Launch kLaunch[] = {&Tile<Format, T>::launch...};
  if (tile_index < 0 || tile_index >= kNumBlockTiles) return cudaErrorInvalidValue;
  return kLaunch[tile_index](rows, num_rows, stream);
}

template <typename Format>
cudaError_t launch_block_rows_of(int tile_index, const RowDesc* rows, int64_t num_rows,
                                 cudaStream_t stream) {
  return launch_tile<Format>(tile_index, rows, num_rows, stream,
                             std::make_index_sequence<kNumBlockTiles>());
}

template <typename Format, size_t... T>
int64_t tile_smem_bytes(int tile_index, std::index_sequence<T...>) {
  static constexpr int64_t kBytes[] = {Tile<Format, T>::Rows::kSmemBytes...};
  return tile_index < 0 || tile_index >= kNumBlockTiles ? -1 : kBytes[tile_index];
}

template <typename Format>
int64_t block_rows_smem_bytes_of(int tile_index) {
  return tile_smem_bytes<Format>(tile_index, std::make_index_sequence<kNumBlockTiles>());
}

// Instantiates every tile of one dtype: block_rows_<dtype>.cu does it for its own dtype,
// so the build compiles the dtypes in parallel and block_rows.cu only declares them.
#define LAPERM_INSTANTIATE_BLOCK_ROWS(Format)                                            \
  template cudaError_t launch_block_rows_of<Format>(int, const RowDesc*, int64_t,        \
                                                    cudaStream_t);                       \
  template int64_t block_rows_smem_bytes_of<Format>(int);

}  // namespace cuda
}  // namespace laperm
