"""Threads, long soak runs, fuzzing, memory limits."""
