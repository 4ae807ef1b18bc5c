"""The repository's tools: the benchmark's check, gpucheck, ptxas_report."""
