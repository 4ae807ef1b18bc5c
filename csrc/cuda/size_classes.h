// The size classes: which rows go to which kernel, and the limits of each launch. The
// planner (host/plan.cpp) and the kernels (*.cu) read these; Python reads them through
// laperm::cuda_size_classes (host/plan_ops.cpp), so they are written down only here.
//
// A row goes to the first class that holds it:
//   * warp: length <= kWarpMaxLength; one warp per row, two elements per lane, ranked by
//     comparing every pair through shuffles (no shared memory, no sort);
//   * block tile T: length <= T; one thread block per row, the row padded to T and sorted
//     in shared memory by cub::BlockRadixSort, the scatter fused after the sort;
//   * large: longer than the largest block tile the device's shared memory allows; rows
//     are batched into bounded scratch and sorted by cub::DeviceSegmentedRadixSort, or,
//     from kDeviceSortMinLength elements on, one row per batch by cub::DeviceRadixSort.
//
// Plain C++ with no dependencies: g++ compiles it into every build, nvcc into the kernels.
#pragma once

#include <cstdint>

namespace laperm {
namespace cuda {

// --- warp class --------------------------------------------------------------------------
constexpr int64_t kWarpMaxLength = 64;
constexpr int kWarpRowsThreads = 256;  // 8 rows per block of the warp kernel

// Rows per launch of the on-chip classes: a grid holds at most 2^31 - 1 blocks in x; the
// block class runs one block per row, the warp class one warp per row.
constexpr int64_t kMaxGridBlocks = 0x7fffffff;
constexpr int64_t kMaxBlockClassRows = kMaxGridBlocks;
constexpr int64_t kMaxWarpClassRows = kMaxGridBlocks * (kWarpRowsThreads / 32);

// --- block class -------------------------------------------------------------------------
struct BlockTile {
  int64_t tile;     // elements per row-tile (threads * items)
  int threads;      // threads per block
  int items;        // elements per thread
};

// Every tile has its own kernel instantiation per dtype. Tiles grow by 2x up to 2048, then
// by 1.33-1.5x, so the long rows that dominate the work are padded by at most 1.5x
// (ResNet-50's 2304- and 4608-element rows fill 75% of the 3072 and 6144 tiles). Keys,
// columns and CUB's ranks must fit in registers without spills (CI prints ptxas -v and
// fails on a spill). That caps the tile at 8192: a 16384 tile needs 1024 threads x 16
// items, and at 1024 threads a thread gets at most 64 registers, which spilled 124-196
// bytes per thread for every key width, keys-only sorts of packed (key, column) included
// (measured with ptxas for sm_90).
constexpr BlockTile kBlockTiles[] = {
    {256, 64, 4},    {512, 128, 4},   {1024, 256, 4},   {2048, 256, 8},
    {3072, 512, 6},  {4096, 512, 8},  {6144, 512, 12},  {8192, 512, 16},
};
constexpr int kNumBlockTiles = sizeof(kBlockTiles) / sizeof(kBlockTiles[0]);
constexpr int64_t kLargestBlockTile = kBlockTiles[kNumBlockTiles - 1].tile;

// Shared memory a tile's kernel needs, an upper bound the .cu files static_assert against
// sizeof(TempStorage): the sort exchanges keys, then columns, through one buffer of
// tile * max(key, 16-bit column) bytes, and CUB's radix counters take up to ~36 B per
// thread (the 40 here). The host uses it to pick the largest tile the device's opt-in
// limit allows without asking the kernels.
constexpr int64_t block_tile_smem_bytes(int64_t tile, int threads, int key_bytes) {
  return tile * (key_bytes > 2 ? key_bytes : 2) + int64_t(threads) * 40;
}

// --- large class -------------------------------------------------------------------------
// Elements per block of the key-gathering and scatter kernels.
constexpr int kLargeRowsThreads = 256;
constexpr int64_t kLargeRowsChunk = 4096;
// Per batch: cub::DeviceSegmentedRadixSort takes int offsets, and the batch's rows are the
// y dimension of the gather/scatter grids (at most 65535).
constexpr int64_t kMaxBatchRows = 65535;
constexpr int64_t kMaxBatchItems = (int64_t(1) << 31) - 1;
// The planner's default bound on a batch's elements (scratch ~16-24 B each); a longer row
// is a batch of its own.
constexpr int64_t kDefaultBatchItems = int64_t(1) << 22;

// DeviceSegmentedRadixSort sorts each segment with one thread block, so a batch of a few
// very long rows would keep a few SMs busy for milliseconds while the rest idle (a batch
// of 2^22 items holds at most 16 rows of 2^18). A row this long is therefore a batch of
// its own, sorted by cub::DeviceRadixSort (stable) with every SM on the one row: a few
// launches and ~20-40 us for 2^18-2^20 pairs on an H100 (estimate), where one block would
// need ~0.5-2 ms. The planner and the kernels decide with the same predicate.
constexpr int64_t kDeviceSortMinLength = int64_t(1) << 18;
constexpr bool sorts_device_wide(int64_t batch_items, int64_t batch_rows) {
  return batch_rows == 1 && batch_items >= kDeviceSortMinLength;
}

}  // namespace cuda
}  // namespace laperm
