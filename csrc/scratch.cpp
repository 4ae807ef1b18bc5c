#include "scratch.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <atomic>
#include <cstdio>

namespace laperm {
namespace {

std::atomic<int64_t> armed_failure{0};  // laperm::_test_fail_allocation's k; 0: none

// Test-only: the k-th scratch allocation (1-based) of the next call to reach its
// allocations (to construct a ScratchCounter) fails as if memory had run out; that call
// disarms it, as does k = 0.
void test_fail_allocation(int64_t k) {
  TORCH_CHECK_VALUE(k >= 0, "laperm::_test_fail_allocation: k must be >= 0, got ", k);
  armed_failure.store(k);
}

}  // namespace

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

// An op with no tensor arguments dispatches to CompositeExplicitAutograd.
TORCH_LIBRARY_IMPL(laperm, CompositeExplicitAutograd, m) {
  m.impl("_test_fail_allocation", &test_fail_allocation);
}

}  // namespace laperm
