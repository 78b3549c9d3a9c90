"""The examples in python/README.md run as written."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run():
    found = blocks()
    assert found, "python/README.md has no python example"
    from conftest import spdl_usable

    for code in found:
        if "spdl" in code and spdl_usable():
            continue
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"example failed:\n{code}\n{done.stderr[-2000:]}"
