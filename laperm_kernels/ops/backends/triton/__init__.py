"""The Triton backend in one package: ``backend`` (the backend interface, launches and
their cached plans), ``layout`` (which rows go to which kernel, in what batches) and the
kernels (``keys``, ``sort_chunks``, ``merge_runs``, ``rank_match_block``, gathered in
``kernels``, imported only where triton is).
"""
