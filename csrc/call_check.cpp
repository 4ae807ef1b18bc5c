// laperm::check_call_: the public ops' input rules, checked in one native call, and the
// call's groups. A sync of a whole model passes every parameter through here, so the
// per-tensor work is a few field reads in C++ instead of Python.
//
// A call that is valid and is one group of contiguous CPU tensors whose key the caller
// names (cpu_keys: the keys backend="auto" has decided for the C++ kernel; cpu_any: the
// caller asked for it) is rank-matched here and then, by the CPU kernel: a sync of CPU
// tensors is one native call, with no second pass over the tensor lists.
//
// It says whether the call is valid; it raises nothing for bad tensors. On false, the
// Python validation (laperm_kernels/ops/rank_match.py), which holds the error messages, runs and
// raises the precise error. The rules are the same (tests/ops/test_bad_input.py holds both
// to every bad input):
//   * weights and sorted_inits pair up; each weight has ndim >= 1 and a float32, float64,
//     float16 or bfloat16 dtype; its sorted_init has the same dtype, shape and device;
//   * no weight has elements that overlap each other (expand());
//   * no weight shares a byte with any other tensor of the call (sorted_inits may share
//     memory with each other: they are only read). Meta tensors have no memory.
// Groups are (device, dtype) in order of first appearance; each gets a 64-bit FNV-1a hash
// of its device, dtype and weights' shapes (the dispatch key; a collision only shares a
// backend choice, and every backend gives the same bits).
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

#include "call_check.h"
#include "cpu/rank_match_cpu.h"
#include "tensor_pairs.h"

namespace laperm {
namespace {

// The standard sufficient test: each stride, by increasing size, steps past everything
// the smaller ones span.
bool elements_overlap(const at::Tensor& t) {
  if (t.numel() == 0 || t.is_non_overlapping_and_dense()) return false;  // a cached flag
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of dims of size > 1
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.size(d) > 1) dims.emplace_back(t.stride(d), t.size(d));
  std::sort(dims.begin(), dims.end());
  int64_t span = 0;
  for (const auto& [stride, size] : dims) {
    if (stride <= span) return true;
    span += stride * (size - 1);
  }
  return false;
}

struct Span {
  uintptr_t storage;
  int64_t begin, end;  // bytes from the storage's start
  bool writes;
  bool operator<(const Span& o) const {
    return std::tie(storage, begin, end) < std::tie(o.storage, o.begin, o.end);
  }
};

Span span_of(const at::Tensor& t, bool writes) {
  const int64_t item = t.element_size();
  int64_t extent = 0;
  for (int64_t d = 0; d < t.dim(); ++d) extent += t.stride(d) * (t.size(d) - 1);
  const int64_t start = t.storage_offset();
  return {reinterpret_cast<uintptr_t>(t.storage().data()), start * item,
          (start + extent + 1) * item, writes};
}

uint64_t fnv1a(uint64_t h, int64_t v) {
  for (int b = 0; b < 8; ++b) {
    h ^= static_cast<uint64_t>(v >> (8 * b)) & 0xFF;
    h *= 1099511628211ULL;
  }
  return h;
}

uint64_t group_seed(const c10::Device& device, at::ScalarType dtype) {
  uint64_t h = fnv1a(14695981039346656037ULL, static_cast<int64_t>(device.type()));
  h = fnv1a(h, device.index());
  return fnv1a(h, static_cast<int64_t>(dtype));
}

}  // namespace

CallCheck check_call(at::TensorList weights, at::TensorList sorted_inits) {
  const auto invalid = [] { return CallCheck{}; };
  if (weights.size() != sorted_inits.size()) return invalid();
  std::vector<std::pair<c10::Device, at::ScalarType>> groups;
  std::vector<int64_t> group_of, keys;
  std::vector<Span> spans;
  bool contiguous = true;
  group_of.reserve(weights.size());
  spans.reserve(2 * weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    const at::Tensor& s = sorted_inits[i];
    if (!is_supported_dtype(w.scalar_type()) || s.scalar_type() != w.scalar_type() || w.dim() == 0 ||
        s.sizes() != w.sizes() || s.device() != w.device() || elements_overlap(w))
      return invalid();
    contiguous = contiguous && w.is_contiguous() && s.is_contiguous();
    const std::pair<c10::Device, at::ScalarType> group{w.device(), w.scalar_type()};
    auto found = std::find(groups.begin(), groups.end(), group);
    if (found == groups.end()) {
      groups.push_back(group);
      keys.push_back(static_cast<int64_t>(group_seed(w.device(), w.scalar_type())));
      found = groups.end() - 1;
    }
    const size_t g = static_cast<size_t>(found - groups.begin());
    group_of.push_back(static_cast<int64_t>(g));
    uint64_t h = fnv1a(static_cast<uint64_t>(keys[g]), w.dim());
    for (const int64_t n : w.sizes()) h = fnv1a(h, n);
    keys[g] = static_cast<int64_t>(h);
    if (w.device().type() != c10::DeviceType::Meta) {
      if (w.numel()) spans.push_back(span_of(w, true));
      if (s.numel()) spans.push_back(span_of(s, false));
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t a = 0; a < spans.size(); ++a)
    for (size_t b = a + 1; b < spans.size(); ++b) {
      if (spans[b].storage != spans[a].storage || spans[b].begin >= spans[a].end) break;
      if (spans[a].writes || spans[b].writes) return invalid();
    }
  const bool one_cpu_group = groups.size() == 1 && groups[0].first.is_cpu();
  return {true, std::move(group_of), std::move(keys), contiguous, one_cpu_group};
}

bool bound_for_cpu_kernel(const CallCheck& call, at::IntArrayRef cpu_keys, bool cpu_any) {
  return call.valid && call.one_cpu_group && call.contiguous &&
         (cpu_any || std::find(cpu_keys.begin(), cpu_keys.end(), call.group_keys[0]) !=
                         cpu_keys.end());
}

void run_cpu_kernel(at::TensorList weights, at::TensorList sorted_inits) {
  cpu::rank_match_many_cpu(weights, sorted_inits);  // throws before writing anything
  // what rank_match_many_'s ADInplaceOrView kernel does (inplace_version.cpp)
  for (const at::Tensor& w : weights) torch::autograd::impl::bump_version(w);
}

namespace {

std::tuple<bool, std::vector<int64_t>, std::vector<int64_t>, bool, bool> check_call_op(
    at::TensorList weights, at::TensorList sorted_inits, at::IntArrayRef cpu_keys,
    bool cpu_any) {
  CallCheck call = check_call(weights, sorted_inits);
  const bool run = bound_for_cpu_kernel(call, cpu_keys, cpu_any);
  if (run) run_cpu_kernel(weights, sorted_inits);
  return {call.valid, std::move(call.group_of), std::move(call.group_keys), call.contiguous,
          run};
}

}  // namespace

TORCH_LIBRARY_IMPL(laperm, CompositeExplicitAutograd, m) {
  m.impl("check_call_", check_call_op);
}

}  // namespace laperm
