// The rank-matching row kernel built for AVX-512 (x86-64-v4), chosen at run time.
#if defined(__x86_64__)
#pragma GCC target("avx2,bmi,bmi2,fma,lzcnt,popcnt,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512cd")
#define LAPERM_ISA avx512
// g++ 12 warns that the AVX-512 intrinsics' own _mm512_undefined_* placeholders are used
// uninitialised once inlined (GCC bug 105593, fixed in GCC 13); the code is not affected.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define LAPERM_SIMD_LEVEL 2
#include "row_kernel_impl.h"

namespace laperm {
namespace cpu {

KernelTable kernel_table_avx512() { return avx512::make_kernel_table("avx512"); }

}  // namespace cpu
}  // namespace laperm
#endif
