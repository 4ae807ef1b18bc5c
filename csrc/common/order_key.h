// The ordering contract of rank matching (docs/contract.md), as integer keys.
//
// Every backend sorts a row by `order_key(bits)` and breaks ties by column index, so two
// values compare the way the PyTorch reference (a stable torch.sort) compares them:
//   * ascending by value, +inf and -inf are ordinary values;
//   * -0.0 and +0.0 tie (both map to the key of +0.0);
//   * every NaN ties with every other NaN and sorts after +inf (all NaNs map to the key of
//     the canonical quiet +NaN, the largest key).
// The transform is the classic one: flip all bits of negatives, set the sign bit of
// non-negatives, so unsigned integer order equals float order.
//
// Plain C++ with no dependencies, shared by the CPU kernels and the CUDA kernels.
#pragma once

#include <cstdint>

// On the host these helpers get internal linkage: the CPU kernels include this header from
// translation units compiled for different instruction sets, and an out-of-line copy built
// with AVX-512 must never be merged (ODR) into the code path of an older CPU.
#if defined(__CUDACC__)
#define LAPERM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LAPERM_HOST_DEVICE static inline
#endif

namespace laperm {

// Bit-level facts about one floating-point format.
template <typename BitsT, BitsT kInfBits, BitsT kQuietNaNBits>
struct FloatFormat {
  using Bits = BitsT;
  static constexpr int kBits = 8 * sizeof(Bits);
  static constexpr Bits kSignBit = Bits(Bits(1) << (kBits - 1));
  static constexpr Bits kInf = kInfBits;             // +inf: exponent all ones, mantissa 0
  static constexpr Bits kQuietNaN = kQuietNaNBits;   // the NaN every NaN becomes
};

using Float32Format = FloatFormat<uint32_t, 0x7f800000u, 0x7fc00000u>;
using Float64Format =
    FloatFormat<uint64_t, 0x7ff0000000000000ull, 0x7ff8000000000000ull>;
using Float16Format = FloatFormat<uint16_t, 0x7c00u, 0x7e00u>;
using BFloat16Format = FloatFormat<uint16_t, 0x7f80u, 0x7fc0u>;

// Unsigned key whose integer order is the contract's value order (ties not broken here).
// Written with selects, not branches, so loops over it vectorise.
template <typename Format>
LAPERM_HOST_DEVICE typename Format::Bits order_key(typename Format::Bits bits) {
  using Bits = typename Format::Bits;
  const Bits magnitude = Bits(bits & Bits(~Format::kSignBit));
  bits = magnitude > Format::kInf ? Format::kQuietNaN : bits;  // all NaNs tie, after +inf
  bits = magnitude == 0 ? Bits(0) : bits;                       // -0.0 ties with +0.0
  return (bits & Format::kSignBit) ? Bits(~bits) : Bits(bits | Format::kSignBit);
}

}  // namespace laperm
