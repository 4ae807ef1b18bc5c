// Every operator schema of the `laperm` library, in one place.
//
// Backends register kernels for these schemas in their own files
// (cpu/rank_match_cpu.cpp; cuda/ later). The Python package registers the fake (meta)
// kernels used by torch.compile and torch.library.opcheck.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(laperm, m) {
  // For every row r of every weights[t] (rows = reshape(shape[0], -1); a 1-D tensor is
  // one row): weights[t][r, order(weights[t][r])[i]] = sorted_inits[t][r, i], where order
  // is the ascending stable order of SPEC.md. In place; sorted_inits are only read.
  m.def("rank_match_many_(Tensor(a!)[] weights, Tensor[] sorted_inits) -> ()");
  // Which instruction-set build of the CPU kernel this process runs (avx512/avx2/generic).
  m.def("cpu_kernel_isa() -> str");
}

// `import laperm_kernels._C` loads this library, which runs the registrations above.
// The module itself is empty: the ops are reached through torch.ops.laperm.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
