// The element types the CUDA kernels handle, and the one place that turns an ElementType
// into the compile-time float format (common/order_key.h) the kernels are templated on.
//
// Plain C++: g++ compiles it into every build (the planner and the test-only emulation),
// nvcc into the kernels.
#pragma once

#include <cstdint>

#include "common/order_key.h"

namespace laperm {
namespace cuda {

// Stored in a plan's words: the values are part of the plan's format.
enum class ElementType : int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };
constexpr int kNumElementTypes = 4;

constexpr int element_bytes(ElementType t) {
  return t == ElementType::kFloat64 ? 8 : t == ElementType::kFloat32 ? 4 : 2;
}

// The torch dtype's name ("float32", ...), as Python spells it: torch.<name>.
constexpr const char* element_type_name(ElementType t) {
  return t == ElementType::kFloat32   ? "float32"
         : t == ElementType::kFloat64 ? "float64"
         : t == ElementType::kFloat16 ? "float16"
         : t == ElementType::kBFloat16 ? "bfloat16"
                                       : "unknown";
}

// Returns f(Format{}) for `type`'s FloatFormat: every per-dtype entry point is one call,
//   return dispatch_element_type(type, cudaErrorInvalidValue,
//                                [&](auto format) { return launch<decltype(format)>(...); });
// `invalid` is returned for a value outside the enum. None reaches a kernel: torch dtypes
// are mapped by element_type_of and plan words are range-checked by decode_plan.
template <typename R, typename F>
R dispatch_element_type(ElementType type, R invalid, F&& f) {
  switch (type) {
    case ElementType::kFloat32: return f(Float32Format{});
    case ElementType::kFloat64: return f(Float64Format{});
    case ElementType::kFloat16: return f(Float16Format{});
    case ElementType::kBFloat16: return f(BFloat16Format{});
  }
  return invalid;
}

}  // namespace cuda
}  // namespace laperm
