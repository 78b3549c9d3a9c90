#!/usr/bin/env bash
# Builds the one wheel of the Python package: abi3 (CPython 3.10 and newer),
# Linux x86_64, manylinux2014 (glibc 2.17 or newer), release with LTO,
# stripped; then checks it with auditwheel.
#
#   bash python/build-wheel.sh [OUT]    (OUT defaults to python/dist)
#
# Needs a Rust toolchain and a Python 3.10+ with venv; maturin, ziglang (a C
# toolchain for linking against glibc 2.17 without a manylinux container)
# and auditwheel come from PyPI into TOOLS (default target/py-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-python/dist}")
tools=${TOOLS:-target/py-tools}

[ -x "$tools/bin/python" ] || python3 -m venv "$tools"
"$tools/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" ziglang auditwheel

rm -rf "$out" && mkdir -p "$out"
# --zig links through zig's glibc 2.17 stubs, so the extension needs no
# symbol version newer than manylinux2014 allows; maturin's own check
# (auditwheel mode "check") refuses the wheel otherwise.
(cd python && PATH="$(realpath "../$tools")/bin:$PATH" \
  maturin build --release --strip --zig --compatibility manylinux2014 \
    --auditwheel check --out "$out")

wheel=$(ls "$out"/segpool-*.whl)
"$tools/bin/auditwheel" show "$wheel"
# The glibc floor as auditwheel computes it must be what the tag says.
"$tools/bin/auditwheel" show "$wheel" | tr -d '\n' | grep -q '"manylinux_2_17_x86_64"' \
  || { echo "build-wheel: $wheel is not manylinux_2_17 compliant" >&2; exit 1; }
ls -l "$wheel"
