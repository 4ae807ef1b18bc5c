// laperm.SyncCall: one LaPerm sync's call of the public ops, its tensor lists held in C++.
//
// torch.ops converts every tensor of a Tensor[] argument on each call (about 0.2 us a
// tensor): for the small models LaPerm is trained on, most of a sync. A SyncCall takes
// the lists once, when LaPerm plans its syncs (laperm_kernels/ops/prepared_call.py); each run
// then checks every rule of laperm::check_call_ again (what a Parameter holds can change
// between syncs: p.data = ...) and runs the CPU kernel only where check_call_ would.
// Otherwise it touches nothing and says so: the caller takes the ops' path.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/custom_class.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

namespace laperm {

struct SyncCall : torch::CustomClassHolder {
  SyncCall(std::vector<at::Tensor> weights, std::vector<at::Tensor> sorted_inits);

  // (ran, max |x| of each weight before the run as float64 if with_max_abs, else None). Runs when the call is valid, one group of contiguous CPU tensors whose
  // key is in cpu_keys (or cpu_any), no tensor is a Python subclass with its own dispatch
  // and no TorchDispatchMode is active (those see ops: they take the ops' path).
  std::tuple<bool, std::optional<at::Tensor>> run(std::vector<int64_t> cpu_keys, bool cpu_any,
                                   bool with_max_abs);

  std::vector<at::Tensor> weights, sorted_inits;
};

}  // namespace laperm
