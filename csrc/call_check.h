// check_call_'s work (call_check.cpp), for every op that takes a whole call of the public
// ops in one native call: laperm::check_call_ and laperm.SyncCall (sync_call.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace laperm {

struct CallCheck {
  bool valid = false;              // every input rule holds
  std::vector<int64_t> group_of;   // each pair's (device, dtype) group
  std::vector<int64_t> group_keys; // each group's hash of device, dtype and shapes
  bool contiguous = false;         // every tensor is
  bool one_cpu_group = false;      // all the tensors are CPU tensors of one dtype
};

// The rules and groups of a call (call_check.cpp's header comment); raises nothing.
CallCheck check_call(at::TensorList weights, at::TensorList sorted_inits);

// Whether a call goes to the CPU kernel at once: valid, one group of contiguous CPU
// tensors, and its key in cpu_keys (or cpu_any).
bool bound_for_cpu_kernel(const CallCheck& call, at::IntArrayRef cpu_keys, bool cpu_any);

// The CPU kernel on such a call, its in-place write recorded in the version counters.
// Throws before writing anything (row length, memory).
void run_cpu_kernel(at::TensorList weights, at::TensorList sorted_inits);

}  // namespace laperm
