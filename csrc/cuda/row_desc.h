// The row descriptor: what the host planner (host/plan.cpp) writes into a device table
// and every CUDA kernel reads, one per row.
//
// Plain C++ with no dependencies: g++ compiles it into every build, nvcc into the kernels.
#pragma once

#include <cstdint>

namespace laperm {
namespace cuda {

// One row of one weight tensor. The kernels read W and S through these addresses, so one
// launch serves rows of any number of tensors (a whole model's rows of one dtype).
struct RowDesc {
  int64_t w_addr;          // first element of the row in W (written in place)
  int64_t s_addr;          // first element of the row in S, the row's sorted init (read)
  int64_t length;          // elements in the row, >= 1
  int64_t scratch_offset;  // large rows: first element of the row's segment in the batch
                           // scratch; -1 for rows sorted on chip
};
static_assert(sizeof(RowDesc) == 32, "RowDesc is stored as 4 int64 per row");
constexpr int kRowDescWords = 4;

}  // namespace cuda
}  // namespace laperm
