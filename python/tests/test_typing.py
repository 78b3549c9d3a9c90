"""The stubs as a type checker sees them: ``mypy --strict`` accepts a client
that hands a segpool pool to SPDL's typed ``iterate_in_subprocess`` and
endpoints, and refuses misuse (so the check has teeth). Runs where mypy and
a working spdl-core are installed (CI: Python 3.11 and 3.12)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest
from conftest import REQUIRE_SPDL, spdl_usable

HERE = pathlib.Path(__file__).parent / "typing"


def test_mypy_strict_accepts_a_client_passing_a_segpool_pool_to_spdl():
    if not REQUIRE_SPDL:  # CI installs mypy wherever it requires SPDL
        pytest.importorskip("mypy", reason="mypy is not installed here")
        if why := spdl_usable():
            pytest.skip(why)
    cache = os.environ.get("SEGPOOL_MYPY_CACHE") or tempfile.mkdtemp(prefix="segpool-mypy-")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", cache, "--no-error-summary",
         "--hide-error-context", "client.py", "misuse.py"],
        cwd=HERE, capture_output=True, text=True, timeout=300,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if e.startswith("client.py")], done.stdout
    expected = {
        n for n, line in enumerate((HERE / "misuse.py").read_text().splitlines(), 1) if "# E:" in line
    }
    flagged = {int(m.group(1)) for e in errors if (m := re.match(r"misuse\.py:(\d+):", e))}
    assert flagged == expected, done.stdout + done.stderr
