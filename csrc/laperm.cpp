// Every operator schema of the `laperm` library, in one place: the product's operators.
//
// The inspection and test-only operators are in their own library, laperm_testing
// (csrc/testing/library.cpp).
// Backends register kernels for these schemas in their own files (call_check.cpp,
// max_abs.cpp, cpu/rank_match_cpu.cpp, cuda/rank_match_cuda.cpp, cuda/host/plan_ops.cpp).
// The fake (meta) kernels used by torch.compile and torch.library.opcheck are Python's,
// in laperm_kernels/ops/_meta_registrations.py (set_python_module below names it).
#include <Python.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "sync_call.h"

TORCH_LIBRARY(laperm, m) {
  // The module that registers the fake kernels: torch checks, at a fake kernel's first
  // call, that it was registered there, and names the module when one is missing.
  m.set_python_module("laperm_kernels.ops._meta_registrations");
  // For every row r of every weights[t] (rows = reshape(shape[0], -1); a 1-D tensor is
  // one row): weights[t][r, order(weights[t][r])[i]] = sorted_inits[t][r, i], where order
  // is the ascending stable order of docs/contract.md. In place; sorted_inits are only read.
  m.def("rank_match_many_(Tensor(a!)[] weights, Tensor[] sorted_inits) -> ()");
  // Whether a call of the public ops is valid (every input rule of rank_match_many_, in
  // call_check.cpp), its (device, dtype) groups in order of first appearance (group_of:
  // each pair's group), a hash of each group's device, dtype and shapes, and whether every
  // tensor is contiguous. Raises nothing for bad tensors: Python then says what is wrong.
  // ran: the call was valid, one group of contiguous CPU tensors whose key is in cpu_keys
  // (or cpu_any), and the CPU kernel has rank-matched it (the ops' fast path).
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
