// The kernel of laperm_testing::fail_allocation (library.cpp): arms scratch.h's
// allocation failure, which the next call to count its scratch allocations takes.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdint>

#include "scratch.h"

namespace laperm {
namespace {

void fail_allocation(int64_t k) {
  TORCH_CHECK_VALUE(k >= 0, "laperm_testing::fail_allocation: k must be >= 0, got ", k);
  arm_allocation_failure(k);
}

}  // namespace

// An op with no tensor arguments dispatches to CompositeExplicitAutograd.
TORCH_LIBRARY_IMPL(laperm_testing, CompositeExplicitAutograd, m) {
  m.impl("fail_allocation", &fail_allocation);
}

}  // namespace laperm
