#!/usr/bin/env bash
# SPDL anchor row: installs spdl and numpy from PyPI into a virtual
# environment and runs SPDL's own SharedMemorySegmentPool over the payload
# sizes of the transport benchmark (see spdl_anchor.py).
#
#   benches/spdl_anchor.sh [--quick] [--out DIR]
#
# VENV (default: target/spdl-venv) is reused when it already has spdl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VENV:-$here/../target/spdl-venv}"
if ! "$venv/bin/python" -c 'import spdl.pipeline, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet spdl numpy
fi
exec "$venv/bin/python" "$here/spdl_anchor.py" "$@"
