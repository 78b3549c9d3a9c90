#!/usr/bin/env bash
# The Python package's CI: makes (or reuses) a virtual environment, installs
# the build and test tools from PyPI, builds and installs the package, then
# runs python/tests once per multiprocessing start method.
#
#   bash python/ci.sh [VENV]        (VENV defaults to .venv at the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q maturin "spdl-core==0.8.0" numpy pytest

(cd python && cargo fmt --check && cargo clippy --all-targets -- -D warnings)
"$venv/bin/python" -m pip install -q ./python

status=0
for method in fork spawn forkserver; do
  echo "=== pytest, default start method: $method"
  SEGPOOL_START_METHOD=$method "$venv/bin/python" -m pytest python/tests -q -p no:cacheprovider \
    || status=1
done
exit $status
