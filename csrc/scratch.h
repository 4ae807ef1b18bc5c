// Scratch memory of the kernels' host code.
//
// Every op allocates all of its scratch before it writes the first weight, so running out
// of memory raises torch.OutOfMemoryError (c10::OutOfMemoryError) with every weight
// unchanged. Each allocation of a call is counted, so that a test can make the k-th one
// fail (laperm_testing::fail_allocation, test-only) and check that promise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>

namespace laperm {

// Test-only (laperm_testing::fail_allocation, testing/fault_injection.cpp): the k-th
// scratch allocation (1-based) of the next call to construct a ScratchCounter fails as if
// memory had run out; that call disarms it, as does k = 0. k must be >= 0.
void arm_allocation_failure(int64_t k);

// Counts the scratch allocations of one call; a call constructs one, before its first
// allocation. Constructing it takes (and clears) the failure armed by
// arm_allocation_failure, so exactly one call sees it.
class ScratchCounter {
 public:
  ScratchCounter();
  // Counts an allocation about to be made: true if it must fail as if memory ran out.
  bool next_fails() { return ++count_ == fail_at_; }

 private:
  int64_t fail_at_;  // 1-based index of the allocation to fail; 0: none
  int64_t count_ = 0;
};

// `count` uninitialised elements of T, or nullptr if memory ran out or `counter` made
// this allocation fail. Never throws.
template <typename T>
std::unique_ptr<T[]> try_allocate(ScratchCounter& counter, size_t count) {
  if (counter.next_fails()) return nullptr;
  return std::unique_ptr<T[]>(new (std::nothrow) T[count]);
}

// Throws c10::OutOfMemoryError (torch.OutOfMemoryError in Python) with `message`.
[[noreturn]] void throw_out_of_memory(const std::string& message);

// "1610612736 bytes (1.50 GiB)": exact, then readable.
std::string format_bytes(int64_t bytes);

}  // namespace laperm
