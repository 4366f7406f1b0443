"""Every Python block of the README runs as written, in order, in one namespace.

A block is skipped only when the line before its opening fence is
``<!-- not run: <reason> -->`` (the multi-process recipe, which needs several
processes; it is run by its own test). Each block is executed in a temporary
working directory, so files it writes (checkpoints, figures) do not land in the
repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip_reason)`` of every ```python block."""
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        skip = re.match(r"<!-- not run: (.*) -->", m.group("before").strip())
        out.append((line, m.group("code"), skip.group(1) if skip else None))
    return out


def test_readme_has_python_blocks():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5
    assert all(reason for _, _, reason in blocks if reason is not None)


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    ran = 0
    for line, code, skip in python_blocks(README.read_text()):
        if skip is not None:
            continue
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - re-raised with the block's line
            raise AssertionError(f"README block at line {line} failed: {e!r}") from e
        ran += 1
    assert ran >= 5
