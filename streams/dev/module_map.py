"""The module map of docs/development.md, generated from each module's docstring's first sentence.

Why generated: a hand-kept layout table fell behind the code (six modules missing in one
round). ``pairstream docs`` writes the table between its markers; ``tests/test_layout.py``
fails when the file holds another one, or when a module has no docstring to show.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

BEGIN, END = "<!-- modules:begin -->", "<!-- modules:end -->"
PACKAGES = ("streams", "models", "training", "bench")


def first_sentence(path: Path) -> str:
    """The first sentence of the module's docstring ('' if it has none), read without importing."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph[:end + 1] if end >= 0 else paragraph


def modules(root: Path) -> list[tuple[str, str]]:
    """(path relative to ``root``, its docstring's first sentence) of every module of the packages."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            found.append((path.relative_to(root).as_posix(), first_sentence(path)))
    return found


def markdown_table(root: Path) -> str:
    rows = [f"| `{name}` | {line.replace('|', '/')} |" for name, line in modules(root)]
    return "\n".join(["| module | what it is for (its docstring's first sentence) |", "| --- | --- |", *rows])


def with_table(text: str, table: str) -> str:
    """``text`` with the block between the module-map markers replaced by ``table``."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN} ... {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text, count=1)
