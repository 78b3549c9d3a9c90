#!/usr/bin/env bash
# Every test of the project, Rust and Python, on a fresh Linux machine with
# a Rust toolchain (1.85+) and Python 3.10+:
#
#   bash scripts/test-all.sh
#
# 1. the Rust workspace (the crate, the command-line tool, the kill -9
#    sample), in release;
# 2. the Python package (python/ci.sh): one abi3 manylinux2014 wheel, built
#    once and checked with auditwheel, installed without Rust into a virtual
#    environment per Python (3.10 to 3.13; VENV, default target/py-venv, is
#    the 3.12 one, with torch), each with numpy, pytest and spdl-core from
#    PyPI; its tests run under each multiprocessing start method; then the
#    source install (pip install ./python) once.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-features --workspace
bash python/ci.sh "${VENV:-target/py-venv}"
