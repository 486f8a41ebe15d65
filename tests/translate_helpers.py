"""Shared helpers for the translate tests: stores in tmp_path, bindings, map files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from translate.bindings import Binding

#: 2030-01-01T00:00:00Z, a fixed "now" for tests.
NOW = 1893456000.0

X1 = "+825070001001"
X2 = "+825070001002"
A = "+821011110001"
B = "+821022220002"
C = "+821033330003"
D = "+821044440004"


def ax(id: str = "ax-1", x: str = X1, a: str = A, **kw: object) -> Binding:
    return Binding(id=id, kind="ax", virtual=x, a=a, **kw)  # type: ignore[arg-type]


def axb(id: str = "axb-1", x: str = X1, a: str = A, b: str = B, **kw: object) -> Binding:
    return Binding(id=id, kind="axb", virtual=x, a=a, b=b, **kw)  # type: ignore[arg-type]


def axn(id: str = "axn-1", x: str = X1, a: str = A, b: str = B, **kw: object) -> Binding:
    return Binding(id=id, kind="axn", virtual=x, a=a, b=b, **kw)  # type: ignore[arg-type]


def write_map(directory: Path, name: str, text: str) -> Path:
    """Write a map file (dedented) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path
