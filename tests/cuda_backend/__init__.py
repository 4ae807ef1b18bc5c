"""The CUDA backend: GPU tests, the host dispatch on the CPU, the plan cache."""
