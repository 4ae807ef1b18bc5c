"""The triton backend: interpreter and GPU cases, size limits."""
