// laperm::max_abs on the CPU: max |x| of each tensor of a list, in one native call.
//
// LaPerm's check_finite (laperm_kernels/finite_check.py) reads it to tell whether a sync
// met NaN or inf: the result is inf where a tensor holds an inf and NaN where it holds a
// NaN. One call over the whole model replaces a reduction per tensor (on CUDA,
// torch._foreach_norm does the same in a fused kernel). Each tensor is reduced by
// at::parallel_reduce in chunks; NaN wins every comparison.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "max_abs.h"

namespace laperm {
namespace {

constexpr int64_t kGrain = 1 << 16;  // elements a thread takes at least

double combine(double a, double b) {
  return std::isnan(a) || std::isnan(b) ? std::numeric_limits<double>::quiet_NaN()
                                        : (a > b ? a : b);
}

// Acc: the type compared in (float for float, half and bfloat16; double for double).
template <typename T, typename Acc = std::conditional_t<std::is_same_v<T, double>, double, float>>
double max_abs_of(const T* x, int64_t n) {
  return at::parallel_reduce(
      0, n, kGrain, 0.0,
      [x](int64_t begin, int64_t end, double) {
        Acc m = 0;
        bool nan = false;
        for (int64_t i = begin; i < end; ++i) {
          const Acc a = std::fabs(static_cast<Acc>(x[i]));
          nan |= a != a;
          m = a > m ? a : m;
        }
        return nan ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(m);
      },
      combine);
}

}  // namespace

at::Tensor max_abs_cpu(at::TensorList tensors) {
  at::Tensor out = at::empty({static_cast<int64_t>(tensors.size())},
                             at::TensorOptions().dtype(at::kDouble));
  double* result = out.data_ptr<double>();
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK_VALUE(tensors[i].device().is_cpu(), "laperm::max_abs: tensors[", i,
                      "] is on ", tensors[i].device(), "; this kernel takes CPU tensors");
    const at::Tensor t = tensors[i].contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "max_abs", [&] {
      result[i] = max_abs_of(t.const_data_ptr<scalar_t>(), t.numel());
    });
  }
  return out;
}

TORCH_LIBRARY_IMPL(laperm, CPU, m) {
  m.impl("max_abs", max_abs_cpu);
}

}  // namespace laperm
