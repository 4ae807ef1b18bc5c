// ADInplaceOrView kernels of laperm::rank_match_many_ and rank_match_planned_: record
// the in-place write.
//
// A kernel registered only for CPU/CUDA writes the weights without bumping their
// version counters, so autograd could not tell that a tensor saved for backward was
// overwritten and would silently compute gradients from the new values. Like every
// in-place ATen op, this kernel runs the backend kernel below it, then bumps each
// weight's version: backward through a stale graph then fails loudly.
#include <ATen/core/LegacyTypeDispatch.h>  // at::AutoDispatchBelowADInplaceOrView
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <optional>

namespace laperm {
namespace {

void rank_match_many_inplace_or_view(c10::DispatchKeySet keys, at::TensorList weights,
                                     at::TensorList sorted_inits) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("laperm::rank_match_many_", "")
                             .typed<void(at::TensorList, at::TensorList)>();
  {
    at::AutoDispatchBelowADInplaceOrView below;
    op.redispatch(keys & c10::after_ADInplaceOrView_keyset, weights, sorted_inits);
  }
  for (const at::Tensor& w : weights) torch::autograd::impl::bump_version(w);
}

void rank_match_planned_inplace_or_view(c10::DispatchKeySet keys, at::TensorList weights,
                                        at::TensorList sorted_inits, const at::Tensor& plan,
                                        const at::Tensor& rows,
                                        const at::Tensor& segment_offsets,
                                        const std::optional<at::Tensor>& scratch) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("laperm::rank_match_planned_", "")
          .typed<void(at::TensorList, at::TensorList, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, const std::optional<at::Tensor>&)>();
  {
    at::AutoDispatchBelowADInplaceOrView below;
    op.redispatch(keys & c10::after_ADInplaceOrView_keyset, weights, sorted_inits, plan, rows,
                  segment_offsets, scratch);
  }
  for (const at::Tensor& w : weights) torch::autograd::impl::bump_version(w);
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm, ADInplaceOrView, m) {
  m.impl("rank_match_many_", TORCH_FN(rank_match_many_inplace_or_view));
  m.impl("rank_match_planned_", TORCH_FN(rank_match_planned_inplace_or_view));
}

}  // namespace laperm
