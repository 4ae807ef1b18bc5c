"""The benchmark (``python -m bench`` from the checkout; ``make bench``): rank matching of
whole models' weights, every backend and naive baseline, checked bit for bit.

- ``__main__``: the command line (parse_args, main, its progress bar)
- ``presets``: models' weight shapes; ``baselines``: the naive methods and the floors
- ``results``: one configuration's methods, weights and result rows; ``timing``: the
  interleaved, budgeted timing loop; ``table``: the printed table; ``plot``: the chart
- ``host_overhead``: the fixed host cost of a call and of a LaPerm sync
- ``machine``: the machine description (also the base of laperm-gpucheck's)

Nothing in the core package imports this one.
"""
