// Large class: rows longer than the largest block tile, in batches of bounded scratch.
//
// A row this long does not fit on chip, so the work is three stream-ordered launches per
// batch of rows:
//   1. gather:  (order key, column) of every element into the batch scratch, each row a
//               segment at its scratch_offset (a grid of row chunks x rows);
//   2. sort:    cub::DeviceSegmentedRadixSort::SortPairs over the keys' bits (one thread
//               block per segment), or cub::DeviceRadixSort::SortPairs for a batch that is
//               one row of >= kDeviceSortMinLength (every SM on one row; size_classes.h). Both
//               radix sorts are stable and every segment starts in column order, so ties
//               stay in column order: the contract's order;
//   3. scatter: W[column] = S[rank] for every rank of every segment (S read coalesced).
// Scratch is double-buffered keys and columns (CUB's DoubleBuffer: no extra copy), then
// CUB's temporary storage, sized for either sort so that one allocation serves every
// batch; the planner bounds a batch's items, so scratch is bounded by the larger of that
// bound and the longest row. Traffic per element: W and S read once, W written once, and
// ~16-24 bytes per radix pass in the scratch (docs/cuda.md).
//
// The host side only asks CUB for sizes (no sync) and launches: capturable in a graph
// when the caller allocates the scratch with a capture-aware allocator.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "common/order_key.h"
#include "cuda/kernels.h"

namespace laperm {
namespace cuda {
namespace {

using Column = uint32_t;

constexpr size_t align_up(size_t bytes) { return (bytes + 255) & ~size_t(255); }

template <typename Format>
__global__ void __launch_bounds__(kLargeRowsThreads)
gather_large_rows(const RowDesc* __restrict__ rows, typename Format::Bits* __restrict__ keys,
                  Column* __restrict__ columns) {
  using Bits = typename Format::Bits;
  const RowDesc row = rows[blockIdx.y];
  const Bits* __restrict__ w = reinterpret_cast<const Bits*>(row.w_addr);
  Bits* __restrict__ row_keys = keys + row.scratch_offset;
  Column* __restrict__ row_columns = columns + row.scratch_offset;
  const int64_t begin = int64_t(blockIdx.x) * kLargeRowsChunk;
  const int64_t end = begin + kLargeRowsChunk < row.length ? begin + kLargeRowsChunk : row.length;
  for (int64_t i = begin + threadIdx.x; i < end; i += kLargeRowsThreads) {
    row_keys[i] = order_key<Format>(w[i]);
    row_columns[i] = static_cast<Column>(i);
  }
}

template <typename Bits>
__global__ void __launch_bounds__(kLargeRowsThreads)
scatter_large_rows(const RowDesc* __restrict__ rows, const Column* __restrict__ sorted_columns) {
  const RowDesc row = rows[blockIdx.y];
  Bits* __restrict__ w = reinterpret_cast<Bits*>(row.w_addr);
  const Bits* __restrict__ s = reinterpret_cast<const Bits*>(row.s_addr);
  const Column* __restrict__ row_columns = sorted_columns + row.scratch_offset;
  const int64_t begin = int64_t(blockIdx.x) * kLargeRowsChunk;
  const int64_t end = begin + kLargeRowsChunk < row.length ? begin + kLargeRowsChunk : row.length;
  for (int64_t rank = begin + threadIdx.x; rank < end; rank += kLargeRowsThreads) {
    w[row_columns[rank]] = s[rank];
  }
}

// Where each buffer lies in one batch's scratch.
template <typename Bits>
struct ScratchLayout {
  size_t keys_bytes, columns_bytes, temp_bytes;
  size_t total() const { return 2 * keys_bytes + 2 * columns_bytes + temp_bytes; }
};

template <typename Format>
cudaError_t layout(int64_t items, int64_t num_rows, ScratchLayout<typename Format::Bits>* out) {
  using Bits = typename Format::Bits;
  if (items <= 0 || items > kMaxBatchItems || num_rows <= 0 || num_rows > kMaxBatchRows)
    return cudaErrorInvalidValue;
  out->keys_bytes = align_up(size_t(items) * sizeof(Bits));
  out->columns_bytes = align_up(size_t(items) * sizeof(Column));
  cub::DoubleBuffer<Bits> keys(nullptr, nullptr);
  cub::DoubleBuffer<Column> columns(nullptr, nullptr);
  const int* no_offsets = nullptr;
  size_t segmented_bytes = 0, device_bytes = 0;
  cudaError_t err = cub::DeviceSegmentedRadixSort::SortPairs(
      nullptr, segmented_bytes, keys, columns, int(items), int(num_rows), no_offsets,
      no_offsets, 0, Format::kBits);
  // Room for the device-wide sort whenever a batch this size could be one long row: the
  // caller sizes one scratch by its largest batch, and CUB's need grows with items.
  if (err == cudaSuccess && items >= kDeviceSortMinLength)
    err = cub::DeviceRadixSort::SortPairs(nullptr, device_bytes, keys, columns, int(items),
                                          0, Format::kBits);
  out->temp_bytes = align_up(segmented_bytes > device_bytes ? segmented_bytes : device_bytes);
  return err;
}

template <typename Format>
cudaError_t scratch_bytes(int64_t items, int64_t num_rows, size_t* bytes) {
  ScratchLayout<typename Format::Bits> l;
  const cudaError_t err = layout<Format>(items, num_rows, &l);
  *bytes = err == cudaSuccess ? l.total() : 0;
  return err;
}

template <typename Format>
cudaError_t launch(const RowDesc* rows, int64_t num_rows, int64_t max_length,
                   const int32_t* segment_offsets, int64_t items, void* scratch,
                   size_t scratch_bytes, cudaStream_t stream) {
  using Bits = typename Format::Bits;
  ScratchLayout<Bits> l;
  cudaError_t err = layout<Format>(items, num_rows, &l);
  if (err != cudaSuccess) return err;
  if (scratch == nullptr || scratch_bytes < l.total() || max_length <= 0)
    return cudaErrorInvalidValue;

  char* base = static_cast<char*>(scratch);
  Bits* keys0 = reinterpret_cast<Bits*>(base);
  Bits* keys1 = reinterpret_cast<Bits*>(base + l.keys_bytes);
  Column* columns0 = reinterpret_cast<Column*>(base + 2 * l.keys_bytes);
  Column* columns1 = reinterpret_cast<Column*>(base + 2 * l.keys_bytes + l.columns_bytes);
  void* temp = base + 2 * l.keys_bytes + 2 * l.columns_bytes;

  const dim3 grid(unsigned((max_length + kLargeRowsChunk - 1) / kLargeRowsChunk),
                  unsigned(num_rows));
  gather_large_rows<Format><<<grid, kLargeRowsThreads, 0, stream>>>(rows, keys0, columns0);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;

  cub::DoubleBuffer<Bits> keys(keys0, keys1);
  cub::DoubleBuffer<Column> columns(columns0, columns1);
  size_t temp_bytes = l.temp_bytes;
  err = sorts_device_wide(items, num_rows)
            ? cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, columns, int(items), 0,
                                              Format::kBits, stream)
            : cub::DeviceSegmentedRadixSort::SortPairs(
                  temp, temp_bytes, keys, columns, int(items), int(num_rows), segment_offsets,
                  segment_offsets + 1, 0, Format::kBits, stream);
  if (err != cudaSuccess) return err;

  // CUB chose the buffer holding the result on the host: no sync needed to know it.
  scatter_large_rows<Bits><<<grid, kLargeRowsThreads, 0, stream>>>(rows, columns.Current());
  return cudaGetLastError();
}

}  // namespace

cudaError_t large_rows_scratch_bytes(ElementType type, int64_t items, int64_t num_rows,
                                     size_t* bytes) {
  return dispatch_element_type(type, cudaErrorInvalidValue, [&](auto format) {
    return scratch_bytes<decltype(format)>(items, num_rows, bytes);
  });
}

cudaError_t launch_large_rows(ElementType type, const RowDesc* rows, int64_t num_rows,
                              int64_t max_length, const int32_t* segment_offsets,
                              int64_t items, void* scratch, size_t scratch_bytes,
                              cudaStream_t stream) {
  return dispatch_element_type(type, cudaErrorInvalidValue, [&](auto format) {
    return launch<decltype(format)>(rows, num_rows, max_length, segment_offsets, items,
                                    scratch, scratch_bytes, stream);
  });
}

}  // namespace cuda
}  // namespace laperm
