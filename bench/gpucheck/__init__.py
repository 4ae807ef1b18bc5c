"""laperm-gpucheck (``python -m bench.gpucheck OUTDIR``): qualifies a GPU with the
tests, the benchmark, graph capture, LaPerm steps and backend="auto"'s verdicts, written to
a report. ``__main__`` holds the command line and says what each check does.

- ``checks``: the checks, in order, and how one runs under its time cap; the checks
  by family: ``suite`` (backends, gpu-tests, sanitizer), ``speed`` (launch-plans,
  copy-bandwidth, benchmark), ``steps`` (cuda-graph, laperm-steps, dispatch); what they
  share (results, the run's context, time caps): ``context``
- ``junit``: the gpu-tests check's reading of pytest's JUnit XML
- ``report``: the machine description and report.md / report.json
"""
