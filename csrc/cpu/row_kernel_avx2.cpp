// The rank-matching row kernel built for AVX2 (x86-64-v3), chosen at run time.
#if defined(__x86_64__)
#pragma GCC target("avx2,bmi,bmi2,fma,lzcnt,popcnt,f16c")
#define LAPERM_ISA avx2
#define LAPERM_SIMD_LEVEL 1
#include "row_kernel_impl.h"

namespace laperm {
namespace cpu {

KernelTable kernel_table_avx2() { return avx2::make_kernel_table("avx2"); }

}  // namespace cpu
}  // namespace laperm
#endif
