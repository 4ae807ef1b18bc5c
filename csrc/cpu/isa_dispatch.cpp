// Picks the row-kernel build this CPU can run, once per process.
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "row_kernel.h"

namespace laperm {
namespace cpu {
namespace {

KernelTable select_kernel_table() {
  const char* cap = std::getenv("LAPERM_CPU_ISA");
  if (cap != nullptr && std::strcmp(cap, "avx512") != 0 && std::strcmp(cap, "avx2") != 0 &&
      std::strcmp(cap, "generic") != 0)
    throw std::invalid_argument(std::string("LAPERM_CPU_ISA must be avx512, avx2 or generic; got '") +
                                cap + "'");
  const bool allow_avx512 = cap == nullptr || std::strcmp(cap, "avx512") == 0;
  const bool allow_avx2 = allow_avx512 || std::strcmp(cap, "avx2") == 0;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512cd"))
    return kernel_table_avx512();
  if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2") &&
      __builtin_cpu_supports("fma"))
    return kernel_table_avx2();
#else
  (void)allow_avx2;
#endif
  return kernel_table_generic();
}

}  // namespace

const KernelTable& best_kernel_table() {
  static const KernelTable table = select_kernel_table();  // a throw is retried next call
  return table;
}

}  // namespace cpu
}  // namespace laperm
