#include "scratch.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdio>

namespace laperm {
namespace {

std::atomic<int64_t> armed_failure{0};  // arm_allocation_failure's k; 0: none

}  // namespace

void arm_allocation_failure(int64_t k) {
  TORCH_INTERNAL_ASSERT(k >= 0, "arm_allocation_failure: k must be >= 0, got ", k);
  armed_failure.store(k);
}

ScratchCounter::ScratchCounter() : fail_at_(armed_failure.exchange(0)) {}

void throw_out_of_memory(const std::string& message) {
  TORCH_CHECK_WITH(OutOfMemoryError, false, message);
}

std::string format_bytes(int64_t bytes) {
  const int shift = bytes >= (int64_t(1) << 30) ? 30 : bytes >= (int64_t(1) << 20) ? 20 : 10;
  const char* unit = shift == 30 ? "GiB" : shift == 20 ? "MiB" : "KiB";
  char readable[32];
  std::snprintf(readable, sizeof(readable), "%.2f %s", double(bytes) / double(int64_t(1) << shift),
                unit);
  return std::to_string(bytes) + " bytes (" + readable + ")";
}

}  // namespace laperm
