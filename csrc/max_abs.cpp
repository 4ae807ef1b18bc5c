// laperm::max_abs on the CPU: max |x| of each tensor of a list, in one native call.
//
// LaPerm's check_finite (laperm_kernels/optim/finite_check.py) reads it to tell whether a sync
// met NaN or inf: the result is inf where a tensor holds an inf and NaN where it holds a
// NaN. One call over the whole model replaces a reduction per tensor (on CUDA,
// torch._foreach_norm does the same in a fused kernel). Each tensor is reduced by
// at::parallel_reduce in chunks, each chunk by the row kernels' max_magnitude (an integer
// max over the bits with the sign cleared, built per instruction set: cpu/max_magnitude.h).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/order_key.h"
#include "cpu/row_kernel.h"
#include "max_abs.h"

namespace laperm {
namespace {

constexpr int64_t kGrain = 1 << 18;  // elements a thread takes at least

// Bits of max |x| (below the format's +inf bits, or a NaN) as the value they are.
template <typename Format, typename Float>
double value_of(uint64_t bits) {
  static_assert(sizeof(Float) == sizeof(typename Format::Bits));
  const auto narrow = static_cast<typename Format::Bits>(bits);
  Float value;
  std::memcpy(&value, &narrow, sizeof(value));
  return static_cast<double>(value);
}

// How a dtype is scanned: its kernel, its +inf bits, and how its bits read as a value.
struct Scan {
  cpu::MaxMagnitudeKernel kernel;
  uint64_t inf_bits;
  double (*value)(uint64_t bits);
};

Scan scan_for(at::ScalarType dtype) {
  const cpu::KernelTable& table = cpu::best_kernel_table();
  switch (dtype) {
    case at::kFloat:
      return {table.max_magnitude32, Float32Format::kInf, &value_of<Float32Format, float>};
    case at::kDouble:
      return {table.max_magnitude64, Float64Format::kInf, &value_of<Float64Format, double>};
    case at::kHalf:
      return {table.max_magnitude16, Float16Format::kInf, &value_of<Float16Format, c10::Half>};
    case at::kBFloat16:
      return {table.max_magnitude16, BFloat16Format::kInf,
              &value_of<BFloat16Format, c10::BFloat16>};
    default:
      TORCH_CHECK_TYPE(false, "laperm::max_abs: expected a floating-point tensor (float16, "
                       "bfloat16, float32 or float64); got ", dtype);
  }
}

// max |x| of a contiguous CPU tensor; NaN when it holds one (magnitude bits above +inf).
double max_abs_of(const at::Tensor& t) {
  const Scan scan = scan_for(t.scalar_type());
  const char* data = static_cast<const char*>(t.const_data_ptr());
  const int64_t item = t.element_size();
  const uint64_t largest = at::parallel_reduce(
      0, t.numel(), kGrain, uint64_t(0),
      [&](int64_t begin, int64_t end, uint64_t) {
        return scan.kernel(data + begin * item, end - begin);
      },
      [](uint64_t a, uint64_t b) { return std::max(a, b); });
  return largest > scan.inf_bits ? std::numeric_limits<double>::quiet_NaN()
                                 : scan.value(largest);
}

}  // namespace

at::Tensor max_abs_cpu(at::TensorList tensors) {
  at::Tensor out = at::empty({static_cast<int64_t>(tensors.size())},
                             at::TensorOptions().dtype(at::kDouble));
  double* result = out.data_ptr<double>();
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK_VALUE(tensors[i].device().is_cpu(), "laperm::max_abs: tensors[", i,
                      "] is on ", tensors[i].device(), "; this kernel takes CPU tensors");
    result[i] = max_abs_of(tensors[i].contiguous());
  }
  return out;
}

TORCH_LIBRARY_IMPL(laperm, CPU, m) {
  m.impl("max_abs", max_abs_cpu);
}

}  // namespace laperm
