// laperm::max_abs on the CPU: max |x| of each tensor of a list, in one native call.
//
// LaPerm's check_finite (laperm_kernels/finite_check.py) reads it to tell whether a sync
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

#include "cpu/row_kernel.h"
#include "max_abs.h"

namespace laperm {
namespace {

constexpr int64_t kGrain = 1 << 18;  // elements a thread takes at least

template <typename Float, typename Bits>
double from_bits(uint64_t bits) {
  Float value;
  const Bits narrow = static_cast<Bits>(bits);
  std::memcpy(&value, &narrow, sizeof(value));
  return static_cast<double>(value);
}

// max |x| of a contiguous CPU tensor; NaN when it holds one (magnitude bits above +inf).
double max_abs_of(const at::Tensor& t) {
  const cpu::KernelTable& table = cpu::best_kernel_table();
  cpu::MaxMagnitudeKernel kernel;
  uint64_t inf_bits;
  switch (t.scalar_type()) {
    case at::kFloat: kernel = table.max_magnitude32; inf_bits = 0x7f800000u; break;
    case at::kDouble: kernel = table.max_magnitude64; inf_bits = 0x7ff0000000000000ull; break;
    case at::kHalf: kernel = table.max_magnitude16; inf_bits = 0x7c00u; break;
    case at::kBFloat16: kernel = table.max_magnitude16; inf_bits = 0x7f80u; break;
    default:
      TORCH_CHECK_TYPE(false, "laperm::max_abs: expected a floating-point tensor (float16, "
                       "bfloat16, float32 or float64); got ", t.scalar_type());
  }
  const char* data = static_cast<const char*>(t.const_data_ptr());
  const int64_t item = t.element_size();
  const uint64_t largest = at::parallel_reduce(
      0, t.numel(), kGrain, uint64_t(0),
      [&](int64_t begin, int64_t end, uint64_t) {
        return kernel(data + begin * item, end - begin);
      },
      [](uint64_t a, uint64_t b) { return std::max(a, b); });
  if (largest > inf_bits) return std::numeric_limits<double>::quiet_NaN();
  switch (t.scalar_type()) {
    case at::kFloat: return from_bits<float, uint32_t>(largest);
    case at::kDouble: return from_bits<double, uint64_t>(largest);
    case at::kHalf:
      return static_cast<double>(c10::Half(uint16_t(largest), c10::Half::from_bits()));
    default:
      return static_cast<double>(c10::BFloat16(uint16_t(largest), c10::BFloat16::from_bits()));
  }
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
