#!/usr/bin/env bash
# Every test of the project, Rust and Python, on a fresh Linux machine with
# a Rust toolchain (1.85+) and Python 3.10+:
#
#   bash scripts/test-all.sh
#
# 1. the Rust workspace (the crate, the command-line tool, the kill -9
#    sample), in release;
# 2. the Python package: a virtual environment (VENV, default
#    target/py-venv) gets maturin, spdl-core, numpy and pytest from PyPI,
#    the package is built and installed, and its tests run under each
#    multiprocessing start method (python/ci.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-features --workspace
bash python/ci.sh "${VENV:-target/py-venv}"
