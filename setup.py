"""Builds laperm_kernels._C: the C++ CPU kernels always, the CUDA kernels when possible.

Build without isolation, against the torch already installed (the convention for torch
extensions; an isolated build would fetch some other torch and compile against its headers):

    pip install --no-build-isolation -e .

The CUDA backend's plan (csrc/cuda/host/) and the laperm_testing library of test-only and
inspection ops (csrc/testing/: the CPU emulation of the CUDA kernels among them) are in
every build, where their tests run. Its kernels (csrc/cuda/*.cu)
and their torch glue (csrc/cuda/*.cpp) join the build when the installed torch is a CUDA
build and CUDA_HOME points at a toolkit (set it to the toolkit's root); LAPERM_NO_CUDA=1
forces a CPU-only build.
TORCH_CUDA_ARCH_LIST picks the GPU architectures (e.g. "8.0;9.0").
"""

import glob
import os
import sys

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def _want_cuda(cuda_sources):
    import torch

    return (
        bool(cuda_sources)
        and torch.version.cuda is not None
        and CUDA_HOME is not None
        and os.environ.get("LAPERM_NO_CUDA", "0") != "1"
    )


ROOT = os.path.dirname(os.path.abspath(__file__))


def _extension():
    cpu_sources = [
        "csrc/laperm.cpp",
        "csrc/call_check.cpp",
        "csrc/max_abs.cpp",
        "csrc/sync_call.cpp",
        "csrc/inplace_version.cpp",
        "csrc/scratch.cpp",
        "csrc/tensor_pairs.cpp",
        *sorted(glob.glob("csrc/cpu/*.cpp")),
        *sorted(glob.glob("csrc/cuda/host/*.cpp")),
        *sorted(glob.glob("csrc/testing/*.cpp")),
    ]
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # No -std: cpp_extension adds the standard the installed torch's headers need (C++20;
    # torch 2.14's require it). The .cu kernels also build standalone as C++17.
    cxx_flags = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", *openmp]
    if _want_cuda(cuda_sources):
        return CUDAExtension(
            "laperm_kernels._C",
            cpu_sources + cuda_sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={
                "cxx": cxx_flags + ["-DLAPERM_WITH_CUDA"],
                "nvcc": ["-O3", "-DLAPERM_WITH_CUDA"],
            },
            extra_link_args=openmp,
        )
    return CppExtension(
        "laperm_kernels._C",
        cpu_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=openmp,
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
