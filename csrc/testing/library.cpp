// Every operator schema of the `laperm_testing` library: the inspection and test-only
// operators, kept out of the product's `laperm` library (csrc/laperm.cpp). Nothing on the
// rank-matching path calls them: tests, backends.cuda.describe_plan and the tools do.
// Their kernels are registered beside their jobs in csrc/testing/: inspection.cpp (the
// constants and plan decoding), fault_injection.cpp (fail_allocation) and
// emulated_launcher.cpp (the CPU emulation of the CUDA kernels).
// None has a fake (meta) kernel: none is traced, so no set_python_module here.
#include <torch/library.h>

TORCH_LIBRARY(laperm_testing, m) {
  // --- inspection: what the extension holds, read by tests, the benchmark and gpucheck ---
  // The CPU kernel's constants (cpu/row_kernel.h), named: the one source Python reads
  // (backends.cpu.kernel_limits(); only tests use them).
  m.def("cpu_kernel_limits() -> (int max_row_length, int scratch_bytes_per_element)");
  // The layout of a plan's host words (cuda/host/plan_encoding.h), for tests that forge
  // plans: the magic word, then the words of the header, of a tensor, launch and batch.
  m.def("cuda_plan_layout() -> (int magic, int header_words, int tensor_words, "
        "int launch_words, int batch_words)");
  // A plan's host words, decoded and checked: its dtype, row and segment-offset counts,
  // largest batch, and one int64 row per tensor [w_addr, s_addr, rows, length], launch
  // [tile_index (-1: warp class), row_begin, row_count] and large batch [row_begin,
  // row_count, items, max_length, offsets_begin] (backends.cuda.describe_plan).
  m.def("cuda_decode_plan(Tensor plan) -> (str dtype, int rows, int segment_offsets, "
        "int max_batch_items, Tensor tensors, Tensor launches, Tensor batches)");

  // --- test-only ---
  // (scratch.h) The k-th scratch allocation (1-based) of the next call of
  // laperm::rank_match_many_, rank_match_planned_ or check_call_ (or of emulate_planned_)
  // that reaches its allocations fails as if memory had run out; that call disarms it, as
  // does k = 0. For tests of the promise that a call failing for want of memory changes no
  // weight.
  m.def("fail_allocation(int k) -> ()");
  // (emulated_launcher.cpp) laperm::rank_match_planned_ on CPU tensors, through a CPU
  // emulation of the CUDA kernels, so tests run every step around them without a GPU;
  // emulated_plan_scratch is its laperm::cuda_plan_scratch (the emulation's own scratch).
  m.def("emulated_plan_scratch(Tensor plan) -> Tensor");
  m.def("emulate_planned_(Tensor(a!)[] weights, Tensor[] sorted_inits, Tensor plan, "
        "Tensor rows, Tensor segment_offsets, Tensor? scratch=None) -> ()");
}
