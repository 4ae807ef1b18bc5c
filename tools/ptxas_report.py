"""Summarises ptxas' register/spill report (nvcc -Xptxas -v) and fails on spills in our kernels.

    python tools/ptxas_report.py build/logs/*.log

CI has no GPU to run the kernels on, so what the compiler says about them is the closest
thing to a profile it can check: a spill to local memory in a hot kernel would
turn shared-memory sorting into DRAM traffic. Every (kernel, architecture) record is
printed; the exit status is 1 if a kernel of namespace ``laperm`` spills, or if no record
was found at all (a silently empty log must not pass). Spills in third-party kernels
(CUB's) are listed but do not fail.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)")
_SMEM = re.compile(r"(\d+) bytes smem")
# laperm::FloatFormat<Bits, InfBits, QuietNaNBits>, named by its +inf bit pattern.
_FORMATS = {
    "2139095040": "float32",
    "9218868437227405312": "float64",
    "31744": "float16",
    "32640": "bfloat16",
}
_FORMAT = re.compile(r"laperm::FloatFormat<[^<>]*?,\s*(?:\([^)]*\))?(\d+)u?l*,[^<>]*>")


@dataclass
class Record:
    mangled: str
    arch: str
    registers: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    smem: int = 0
    name: str = ""

    @property
    def ours(self) -> bool:
        return "6laperm" in self.mangled

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


def parse(text: str) -> List[Record]:
    records: List[Record] = []
    current = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = Record(m.group(1), m.group(2))
            records.append(current)
        elif current is None:
            continue
        elif m := _SPILL.search(line):
            current.stack, current.spill_stores, current.spill_loads = map(int, m.groups())
        elif m := _USED.search(line):
            current.registers = int(m.group(1))
            if s := _SMEM.search(m.group(2)):
                current.smem = int(s.group(1))
    return records


def demangle(names: List[str]) -> Dict[str, str]:
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(
        ["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def shorten(name: str) -> str:
    name = _FORMAT.sub(lambda m: _FORMATS.get(m.group(1), m.group(0)), name)
    for noise in ("laperm::cuda::", "(anonymous namespace)::", "laperm::", "void "):
        name = name.replace(noise, "")
    name = re.sub(r"\(.*\)$", "", name).replace(" >", ">")  # drop the parameter list
    return name if len(name) <= 90 else name[:87] + "..."


def report(records: List[Record]) -> int:
    names = demangle(sorted({r.mangled for r in records}))
    for r in records:
        r.name = shorten(names[r.mangled])
    records.sort(key=lambda r: (not r.ours, r.name, r.arch))
    width = max(len(r.name) for r in records)
    print(f"{'kernel':<{width}}  arch    regs  spill st  spill ld  stack  smem")
    for r in records:
        print(
            f"{r.name:<{width}}  {r.arch:<6} {r.registers:>5} {r.spill_stores:>9} "
            f"{r.spill_loads:>9} {r.stack:>6} {r.smem:>5}"
        )
    ours = [r for r in records if r.ours]
    bad = [r for r in ours if r.spills]
    theirs = [r for r in records if not r.ours and r.spills]
    print(
        f"\nptxas_report: {len(ours)} laperm kernel records, {len(records) - len(ours)} third-party"
    )
    for r in theirs:
        print(
            f"ptxas_report: third-party kernel spills (not failing): {r.name} {r.arch} "
            f"{r.spill_stores} B stores / {r.spill_loads} B loads"
        )
    for r in bad:
        print(
            f"ptxas_report: ERROR: {r.name} spills on {r.arch}: {r.spill_stores} B stores, "
            f"{r.spill_loads} B loads",
            file=sys.stderr,
        )
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("logs", nargs="+", help="files holding nvcc -Xptxas -v output")
    args = p.parse_args(argv)
    records: List[Record] = []
    for path in args.logs:
        with open(path, encoding="utf-8", errors="replace") as f:
            records += parse(f.read())
    if not records:
        print(
            "ptxas_report: ERROR: no 'Compiling entry function' records in "
            f"{', '.join(args.logs)} (was -Xptxas -v passed?)",
            file=sys.stderr,
        )
        return 1
    return report(records)


if __name__ == "__main__":
    sys.exit(main())
