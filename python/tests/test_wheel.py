"""The package as a user installs it: from the wheel, with no Rust anywhere.

``python/ci.sh`` installs the wheel that ``python/build-wheel.sh`` built and
sets ``SEGPOOL_WHEEL`` to its path, with a ``PATH`` that has no Rust
toolchain; the tests that check the wheel itself skip without it (a source
install, ``pip install ./python``). The metadata tests run either way.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import sys
import sysconfig
import zipfile

import pytest

import segpool

WHEEL = os.environ.get("SEGPOOL_WHEEL")
SOURCE_TREE = pathlib.Path(__file__).resolve().parents[1]
needs_wheel = pytest.mark.skipif(not WHEEL, reason="not a wheel run (SEGPOOL_WHEEL unset)")


def _record_hash(path: pathlib.Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@needs_wheel
def test_no_rust_toolchain_is_reachable():
    for tool in ("cargo", "rustc", "rustup", "maturin"):
        assert shutil.which(tool) is None, f"{tool} is on PATH: {shutil.which(tool)}"


@needs_wheel
def test_the_module_was_loaded_from_the_wheels_files_in_site_packages():
    site = {pathlib.Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    package = pathlib.Path(segpool.__file__).resolve().parent
    native = pathlib.Path(segpool._segpool.__file__).resolve()
    assert package.parent in site, f"segpool imported from {package}, not site-packages {site}"
    assert SOURCE_TREE not in package.parents and SOURCE_TREE not in native.parents
    assert sys.prefix != sys.base_prefix  # a virtual environment of its own
    # Every installed file of the package is byte for byte the wheel's.
    with zipfile.ZipFile(WHEEL) as whl:
        for name in whl.namelist():
            if not name.startswith("segpool/"):
                continue
            installed = package.parent / name
            assert installed.read_bytes() == whl.read(name), f"{name} differs from the wheel's"
    assert native.name.endswith(".abi3.so")
    dist = importlib.metadata.distribution("segpool")
    record = {str(f): f.hash.value for f in dist.files or [] if f.hash}
    assert _record_hash(native) == "sha256=" + record[f"segpool/{native.name}"]
    wheel_tags = (dist.read_text("WHEEL") or "").splitlines()
    assert "Tag: cp310-abi3-manylinux_2_17_x86_64" in wheel_tags
    assert "Root-Is-Purelib: false" in wheel_tags


@needs_wheel
def test_the_wheel_name_carries_the_version_and_tags():
    name = pathlib.Path(WHEEL).name
    assert name == (
        f"segpool-{segpool.__version__}-cp310-abi3-"
        "manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    )


def test_the_version_is_the_distributions():
    assert segpool.__version__ == importlib.metadata.version("segpool")


def test_the_typing_files_ship_with_the_package():
    package = pathlib.Path(segpool.__file__).parent
    assert (package / "py.typed").is_file()
    assert "class Writer" in (package / "_segpool.pyi").read_text()
    files = {str(f) for f in importlib.metadata.distribution("segpool").files or []}
    assert {"segpool/py.typed", "segpool/_segpool.pyi"} <= files


def test_the_metadata_carries_the_readme_and_the_spdl_extra():
    meta = importlib.metadata.metadata("segpool")
    assert meta["Description-Content-Type"].startswith("text/markdown")
    readme = (SOURCE_TREE / "README.md").read_text()
    assert meta.get_payload().strip() == readme.strip()
    assert "spdl" in (meta.get_all("Provides-Extra") or [])
    needs = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("spdl-core==0.8.0") and "extra == 'spdl'" in r for r in needs), needs
    assert any(r.startswith("numpy") and "extra == 'spdl'" in r for r in needs), needs
