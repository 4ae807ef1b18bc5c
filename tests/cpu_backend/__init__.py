"""The C++ CPU kernel: each instruction-set build against the reference."""
