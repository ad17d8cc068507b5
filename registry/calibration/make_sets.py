"""Build the registry's calibration and evaluation texts from Python's own sources and docs.

Run with the CPython whose standard library is the source (here 3.11.7):

    python registry/calibration/make_sets.py

Both sets are real, offline text: the language reference (pydoc_data.topics, the text of
docs.python.org's reference pages) and standard-library source code with its docstrings. They
are disjoint: calibration takes the even-numbered reference topics and one group of modules,
evaluation the odd-numbered topics and another group, so no text is evaluated that an imatrix
was computed on. README.md beside this file records the sha256 of every output.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import sys
from pathlib import Path

from pydoc_data.topics import topics

HERE = Path(__file__).resolve().parent

CAL_MODULES = ["textwrap", "shlex", "heapq", "bisect", "fractions", "statistics", "difflib",
               "string", "functools", "dataclasses", "contextlib", "pprint"]
EVAL_MODULES = ["calendar", "colorsys", "fnmatch", "glob", "sched", "secrets", "graphlib",
                "ipaddress", "numbers", "reprlib"]


def _functions(module: str) -> list[tuple[str, str, str]]:
    """(qualified name, docstring, source) of the module's documented top-level functions."""
    path = Path(inspect.getsourcefile(__import__(module)))  # type: ignore[arg-type]
    text = path.read_text()
    out = []
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            doc = ast.get_docstring(node)
            if doc:
                src = ast.get_source_segment(text, node) or ""
                out.append((f"{module}.{node.name}", doc, src))
    return out


def calibration() -> list[dict]:
    convs = []
    names = sorted(topics)
    for name in names[0::2]:
        body = topics[name].strip()[:1800]
        convs.append({"messages": [
            {"role": "user", "content": f"Explain the Python language topic '{name}'."},
            {"role": "assistant", "content": body},
        ]})
    for module in CAL_MODULES:
        for qual, doc, src in _functions(module)[:6]:
            convs.append({"messages": [
                {"role": "user", "content": f"What does `{qual}` do? Show me its code."},
                {"role": "assistant",
                 "content": f"{doc.strip()}\n\n```python\n{src[:2000]}\n```"},
            ]})
    return convs


def evaluation() -> str:
    parts = []
    names = sorted(topics)
    for name in names[1::2]:
        parts.append(topics[name].strip()[:2500])
    for module in EVAL_MODULES:
        path = Path(inspect.getsourcefile(__import__(module)))  # type: ignore[arg-type]
        parts.append(path.read_text()[:6000])
    return "\n\n".join(parts) + "\n"


def main() -> None:
    cal = HERE / "chat-code-v1.jsonl"
    cal.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in calibration()))
    ev = HERE / "eval-docs-code-v1.txt"
    ev.write_text(evaluation())
    for p in (cal, ev):
        print(f"{p.name}: {p.stat().st_size} bytes, sha256 "
              f"{hashlib.sha256(p.read_bytes()).hexdigest()} (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
