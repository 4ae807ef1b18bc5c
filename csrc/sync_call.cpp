// laperm.SyncCall (sync_call.h): a LaPerm sync of CPU tensors in one native call with no
// per-tensor conversion.
#include "sync_call.h"

#include <c10/core/impl/TorchDispatchModeTLS.h>

#include <utility>

#include "call_check.h"
#include "max_abs.h"

namespace laperm {

SyncCall::SyncCall(std::vector<at::Tensor> weights_, std::vector<at::Tensor> sorted_inits_)
    : weights(std::move(weights_)), sorted_inits(std::move(sorted_inits_)) {}

namespace {

bool dispatches_in_python(const std::vector<at::Tensor>& tensors) {
  for (const at::Tensor& t : tensors)
    if (t.key_set().has(c10::DispatchKey::Python)) return true;
  return false;
}

}  // namespace

std::tuple<bool, std::optional<at::Tensor>> SyncCall::run(std::vector<int64_t> cpu_keys, bool cpu_any,
                                           bool with_max_abs) {
  if (c10::impl::TorchDispatchModeTLS::stack_len() > 0 || dispatches_in_python(weights) ||
      dispatches_in_python(sorted_inits) ||
      !bound_for_cpu_kernel(check_call(weights, sorted_inits), cpu_keys, cpu_any))
    return {false, std::nullopt};
  std::optional<at::Tensor> max_abs;
  if (with_max_abs) max_abs = max_abs_cpu(weights);
  run_cpu_kernel(weights, sorted_inits);
  return {true, max_abs};
}

}  // namespace laperm
