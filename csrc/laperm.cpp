// Every operator schema of the `laperm` library, in one place.
//
// The product's operators come first; the inspection and test-only ones (`_inspect_`,
// `_test_` and cpu_kernel_limits) close the list, in their own section.
// Backends register kernels for these schemas in their own files (call_check.cpp,
// max_abs.cpp, cpu/rank_match_cpu.cpp, cuda/rank_match_cuda.cpp, cuda/host/plan_ops.cpp,
// testing/emulated_launcher.cpp).
// The Python package registers the fake (meta) kernels used by torch.compile and
// torch.library.opcheck.
#include <Python.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "sync_call.h"

TORCH_LIBRARY(laperm, m) {
  // For every row r of every weights[t] (rows = reshape(shape[0], -1); a 1-D tensor is
  // one row): weights[t][r, order(weights[t][r])[i]] = sorted_inits[t][r, i], where order
  // is the ascending stable order of docs/contract.md. In place; sorted_inits are only read.
  m.def("rank_match_many_(Tensor(a!)[] weights, Tensor[] sorted_inits) -> ()");
  // Whether a call of the public ops is valid (every input rule of rank_match_many_, in
  // call_check.cpp), its (device, dtype) groups in order of first appearance (group_of:
  // each pair's group), a hash of each group's device, dtype and shapes, and whether every
  // tensor is contiguous. Raises nothing for bad tensors: Python then says what is wrong.
  // ran: the call was valid, one group of contiguous CPU tensors whose key is in cpu_keys
  // (or cpu_any), and the CPU kernel has rank-matched it (ops.py's fast path).
  m.def("check_call_(Tensor(a!)[] weights, Tensor[] sorted_inits, int[] cpu_keys, "
        "bool cpu_any) -> (bool valid, int[] group_of, int[] group_keys, bool contiguous, "
        "bool ran)");
  // A LaPerm sync's call held in C++ (sync_call.h): made once per sync plan with the
  // weights and sorted_inits; run(cpu_keys, cpu_any, with_max_abs) -> (ran, max_abs) is
  // check_call_'s fast path, and check_finite's max_abs, with no per-tensor conversion.
  m.class_<laperm::SyncCall>("SyncCall")
      .def(torch::init<std::vector<at::Tensor>, std::vector<at::Tensor>>())
      .def("run", &laperm::SyncCall::run);
  // max |x| of each tensor as float64 (inf where it holds an inf, NaN where it holds a NaN):
  // LaPerm's check_finite on the CPU, in one call (max_abs.cpp).
  m.def("max_abs(Tensor[] tensors) -> Tensor");
  // Which instruction-set build of the CPU kernel this process runs (avx512/avx2/generic).
  m.def("cpu_kernel_isa() -> str");

  // --- the CUDA backend (csrc/cuda) ---
  // Which native backends this build contains: ["cpu"] or ["cpu", "cuda"].
  m.def("compiled_backends() -> str[]");
  // The plan, in every build (cuda/host/plan.h): a group's plan (one dtype and device) as
  // (host words, row-descriptor table [rows, 4] int64 and large-row segment offsets int32,
  // both on the tensors' device). Depends only on addresses and shapes: callers cache it
  // while the tensors live.
  m.def("cuda_row_plan(Tensor[] weights, Tensor[] sorted_inits, int max_block_tile, "
        "int max_batch_items) -> (Tensor, Tensor, Tensor)");
  // The largest block tile whose kernel fits smem_optin_bytes of shared memory per block.
  m.def("cuda_largest_block_tile(ScalarType dtype, int smem_optin_bytes) -> int");
  // The size classes' constants (cuda/size_classes.h), named: the one source Python reads.
  m.def("cuda_size_classes() -> (int warp_max_length, int[] block_tiles, "
        "int[] block_threads, int[] block_items, int default_batch_items, "
        "int max_batch_items, int max_batch_rows, int device_sort_min_length, "
        "int max_warp_class_rows, int max_block_class_rows)");
  // The scratch a plan's large rows take on `device` (a byte tensor; empty when it has
  // none), allocated apart so that a caller can allocate every group's before running any.
  // CUDA builds only.
  m.def("cuda_plan_scratch(Tensor plan, Device device) -> Tensor");
  // rank_match_many_ with a plan made by cuda_row_plan for exactly these tensors and its
  // scratch from cuda_plan_scratch (allocated here when None): only checks and launches,
  // so it can be captured in a CUDA graph.
  m.def("rank_match_planned_(Tensor(a!)[] weights, Tensor[] sorted_inits, Tensor plan, "
        "Tensor rows, Tensor segment_offsets, Tensor? scratch=None) -> ()");

  // ==========================================================================================
  // Not the product: inspection and test-only operators. Nothing on the rank-matching
  // path calls them (tests, backends.cuda.describe_plan and the tools do); the product's
  // operators are all above.
  // ==========================================================================================

  // --- inspection: what the extension holds, read by tests, the benchmark and gpucheck ---
  // The CPU kernel's constants (cpu/row_kernel.h), named: the one source Python reads
  // (backends.cpu.kernel_limits(); only tests use them).
  m.def("cpu_kernel_limits() -> (int max_row_length, int scratch_bytes_per_element)");
  // The layout of a plan's host words (cuda/host/plan_encoding.h), for tests that forge
  // plans: the magic word, then the words of the header, of a tensor, launch and batch.
  m.def("_inspect_cuda_plan_layout() -> (int magic, int header_words, int tensor_words, "
        "int launch_words, int batch_words)");
  // A plan's host words, decoded and checked: its dtype, row and segment-offset counts,
  // largest batch, and one int64 row per tensor [w_addr, s_addr, rows, length], launch
  // [tile_index (-1: warp class), row_begin, row_count] and large batch [row_begin,
  // row_count, items, max_length, offsets_begin] (backends.cuda.describe_plan).
  m.def("_inspect_cuda_decode_plan(Tensor plan) -> (str dtype, int rows, "
        "int segment_offsets, int max_batch_items, Tensor tensors, Tensor launches, "
        "Tensor batches)");

  // --- test-only ---
  // Test-only (scratch.h): the k-th scratch allocation (1-based) of the next call of
  // rank_match_many_, rank_match_planned_ or check_call_ that reaches its allocations
  // fails as if memory had run out; that call disarms it, as does k = 0. For tests of the
  // promise that a call failing for want of memory changes no weight.
  m.def("_test_fail_allocation(int k) -> ()");
  // Test-only (testing/emulated_launcher.cpp): rank_match_planned_ on CPU tensors, through
  // a CPU emulation of the CUDA kernels, so tests run every step around them without a GPU;
  // _test_emulated_plan_scratch is its cuda_plan_scratch (the emulation's own scratch).
  m.def("_test_emulated_plan_scratch(Tensor plan) -> Tensor");
  m.def("_test_emulate_planned_(Tensor(a!)[] weights, Tensor[] sorted_inits, Tensor plan, "
        "Tensor rows, Tensor segment_offsets, Tensor? scratch=None) -> ()");
}

TORCH_LIBRARY_IMPL(laperm, CompositeExplicitAutograd, m) {
  m.impl("compiled_backends", []() -> std::vector<std::string> {
#ifdef LAPERM_WITH_CUDA
    return {"cpu", "cuda"};
#else
    return {"cpu"};
#endif
  });
}

// `import laperm_kernels._C` loads this library, which runs the registrations above.
// The module itself is empty: the ops are reached through torch.ops.laperm.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
