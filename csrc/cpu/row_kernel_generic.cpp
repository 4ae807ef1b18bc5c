// The rank-matching row kernel for any CPU: the compiler's baseline instruction set.
#define LAPERM_ISA generic
#define LAPERM_SIMD_LEVEL 0
#include "row_kernel_impl.h"

namespace laperm {
namespace cpu {

KernelTable kernel_table_generic() { return generic::make_kernel_table("generic"); }

}  // namespace cpu
}  // namespace laperm
