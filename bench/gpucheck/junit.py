"""The gpu-tests check's reading of pytest's JUnit XML file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional


def parse_junit(path: Path) -> Optional[Dict[str, Any]]:
    """Outcome counts of a pytest JUnit XML file (either root element), the failures and
    the skip reasons; None if the file is missing or unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skip_reasons = [], Counter()
    for case in root.iter("testcase"):
        test = "::".join(filter(None, (case.get("classname"), case.get("name"))))
        outcome = {child.tag: child for child in case}
        for tag, key in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            if tag in outcome:
                counts[key] += 1
                message = (outcome[tag].get("message") or "").strip().splitlines()
                if tag == "skipped":
                    skip_reasons[message[0] if message else "(no reason)"] += 1
                else:
                    failures.append(f"{test}: {message[0][:300] if message else tag}")
                break
        else:
            counts["passed"] += 1
    return {**counts, "failures": failures, "skip_reasons": dict(skip_reasons.most_common())}
