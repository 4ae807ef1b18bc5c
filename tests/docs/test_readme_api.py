"""The README's API block is true to the code, and every relative link in README.md and
docs/*.md points at a file the repository holds.

The API block is the first ```python block under "## API". Each entry starts a line:
``lk.NAME(PARAMS)`` for a public function or class, ``opt.METHOD(PARAMS)`` for a method of
``lk.LaPerm``, or ``lk.NAME`` alone for a constant or an exception; a trailing ``# ...`` is
its purpose, and a signature may continue on the next lines until its parentheses close.
PARAMS is read as a Python parameter list and compared with ``inspect.signature`` of the
real object: names, kinds (positional, keyword-only, ...) and defaults. Parameters whose
name starts with ``_`` are private and left out of the comparison. docs/optimizer.md's
quoted ``LaPerm(optimizer, ...)`` signature is held to the code the same way.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import laperm_kernels as lk

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
_ENTRY = re.compile(r"^(lk|opt)\.(\w+)")
_EMPTY = inspect.Parameter.empty


def api_block(text: str) -> str:
    m = re.search(r"^## API\n.*?^```python\n(.*?)^```", text, re.M | re.S)
    assert m, "README.md has no ```python block under '## API'"
    return m.group(1)


def _close_paren(text: str, start: int) -> int:
    """Index of the ``)`` that closes the ``(`` at ``start``, skipping string literals."""
    depth, quote = 0, None
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def api_entries(block: str):
    """(label, owner, name, params or None) for every entry of the API block."""
    lines = block.splitlines()
    entries, i = [], 0
    while i < len(lines):
        m = _ENTRY.match(lines[i])
        if not m:
            i += 1
            continue
        owner, name = m.groups()
        text = lines[i]
        if text[m.end() : m.end() + 1] != "(":
            entries.append((f"{owner}.{name}", owner, name, None))
            i += 1
            continue
        while _close_paren(text, m.end()) < 0:  # the signature goes on on the next line
            i += 1
            assert i < len(lines), f"README.md's API block: {owner}.{name}( is never closed"
            text += " " + lines[i].strip()
        params = text[m.end() + 1 : _close_paren(text, m.end())]
        entries.append((f"{owner}.{name}({params})", owner, name, params))
        i += 1
    return entries


def documented(params: str):
    """[(name, kind, default)] of a parameter list as written in the README."""
    try:
        args = ast.parse(f"def f({params}): pass").body[0].args
    except SyntaxError as e:
        raise AssertionError(f"README.md's API block: cannot read ({params}): {e}") from None
    assert not args.posonlyargs and args.vararg is None and args.kwarg is None, params
    P = inspect.Parameter
    out = []
    positional_defaults = [None] * (len(args.args) - len(args.defaults)) + args.defaults
    for a, d in zip(args.args, positional_defaults):
        out.append((a.arg, P.POSITIONAL_OR_KEYWORD, _EMPTY if d is None else ast.literal_eval(d)))
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        out.append((a.arg, P.KEYWORD_ONLY, _EMPTY if d is None else ast.literal_eval(d)))
    return out


def actual(obj, *, method: bool):
    params = list(inspect.signature(obj).parameters.values())
    if method:
        params = params[1:]  # self
    return [(p.name, p.kind, p.default) for p in params if not p.name.startswith("_")]


def _same(a, b) -> bool:
    return all(
        x[:2] == y[:2] and type(x[2]) is type(y[2]) and x[2] == y[2] for x, y in zip(a, b)
    ) and len(a) == len(b)


def _render(params) -> str:
    out, star = [], False
    for name, kind, default in params:
        if kind is inspect.Parameter.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        out.append(name if default is _EMPTY else f"{name}={default!r}")
    return "(" + ", ".join(out) + ")"


def check_api(text: str) -> list[str]:
    """Every drift between the README's API block and the code, one message each."""
    entries = api_entries(api_block(text))
    problems = []
    for _label, owner, name, params in entries:
        where = f"README.md's API block, {owner}.{name}"
        if owner == "lk" and name not in lk.__all__:
            problems.append(f"{where}: laperm_kernels exports no {name!r} (__all__)")
            continue
        obj = getattr(lk.LaPerm if owner == "opt" else lk, name, None)
        if obj is None:
            problems.append(f"{where}: LaPerm has no method {name!r}")
            continue
        if params is None:
            continue
        doc = documented(params)
        code = actual(obj, method=owner == "opt")
        if not _same(doc, code):
            problems.append(
                f"{where}: the README says {name}{_render(doc)}, the code has {name}{_render(code)}"
            )
    listed = {name for _, owner, name, _ in entries if owner == "lk"}
    for name in sorted(set(lk.__all__) - listed):
        problems.append(f"README.md's API block does not list lk.{name} (in __all__)")
    return problems


def test_readme_api_matches_the_code():
    problems = check_api(README.read_text())
    assert not problems, "the README's API drifted from the code:\n" + "\n".join(problems)


def test_the_api_check_sees_a_drift():
    text = README.read_text()
    assert check_api(text) == []
    entries = api_entries(api_block(text))
    assert len(entries) >= len(lk.__all__)
    drifted = text.replace("check_finite=True", "check_finite=False", 1)
    assert drifted != text
    assert any("lk.LaPerm" in p and "check_finite" in p for p in check_api(drifted))
    dropped = text.replace(', *, backend="auto")', ")", 1)
    assert any(p.startswith("README.md's API block, lk.") for p in check_api(dropped))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", path.read_text()), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text())
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        name = f"{path.relative_to(ROOT)}: ({target})"
        if file_part.startswith("/") or not dest.is_relative_to(ROOT):
            bad.append(f"{name} leaves the repository")
        elif not dest.exists():
            bad.append(f"{name}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{name}: {dest.relative_to(ROOT)} has no heading #{anchor}")
    return bad


def test_every_relative_link_points_at_a_file():
    assert len(DOCUMENTS) >= 10
    bad = [problem for path in DOCUMENTS for problem in broken_links(path)]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_optimizer_doc_signature_matches_the_code():
    text = (ROOT / "docs" / "optimizer.md").read_text()
    spans = re.findall(r"`LaPerm\((optimizer[^`]*)\)`", text)  # not `LaPerm(Adam)`
    assert spans, "docs/optimizer.md quotes no `LaPerm(...)` signature"
    code = actual(lk.LaPerm, method=False)
    for params in spans:
        doc = documented(" ".join(params.split()))
        assert _same(doc, code), (
            f"docs/optimizer.md says LaPerm{_render(doc)}, the code has LaPerm{_render(code)}"
        )
