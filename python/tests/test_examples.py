"""The examples in python/README.md run as written."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
ROOT_README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def python_section(text: str) -> str:
    """The "## Python" section of the repository's README."""
    return text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]


def test_readme_examples_run():
    found = blocks(README.read_text())
    found += blocks(python_section(ROOT_README.read_text()))
    assert len(found) >= 3, "python/README.md or README.md's Python section lost its examples"
    from conftest import spdl_usable

    for code in found:
        if "spdl" in code and spdl_usable():
            continue
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"example failed:\n{code}\n{done.stderr[-2000:]}"
