#!/usr/bin/env bash
# Liveness v3 in one run, side by side with the version before it:
#   1. 64 B units/s between two processes (examples/tput64.rs), built from
#      this tree and from protocol v2 (commit $BASE, checked out as a git
#      worktree under target/), alternating, 5 rounds each; and the
#      instructions per 64 B unit in one thread, counted by callgrind
#      (exact, so noise-free), for both;
#   2. CPU per second asleep and the recovery delay after SIGKILL
#      (benches/liveness.rs);
#   3. CPU per second asleep of a Python thread blocked in begin_unit, if
#      the Python package is installed in $VENV (benches/python/asleep.py).
#
#   bash benches/liveness.sh            (a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-27f45de}
ROUNDS=${ROUNDS:-5}
UNITS=${UNITS:-2000000}
VENV=${VENV:-target/py-venv}

base=target/v2-base
if [ ! -d "$base" ]; then
  git worktree add --detach "$base" "$BASE" >/dev/null
fi
cp examples/tput64.rs "$base/examples/tput64.rs"
# Under valgrind, rustix must read the auxiliary vector through libc (as
# this tree's dev-dependencies say); give the old tree the same.
grep -q use-libc-auxv "$base/Cargo.toml" ||
  sed -i 's/^\[dev-dependencies\]$/[dev-dependencies]\nrustix = { version = "1.1", features = ["use-libc-auxv"] }/' "$base/Cargo.toml"
(cd "$base" && cargo build -q --release --example tput64)
cargo build -q --release --example tput64

run() { "$1" --units "$UNITS" | awk '/units_per_sec/ {print $2}'; }
before=(); after=()
for _ in $(seq "$ROUNDS"); do
  before+=("$(run "$base/target/release/examples/tput64")")
  after+=("$(run target/release/examples/tput64)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mb=$(median "${before[@]}"); ma=$(median "${after[@]}")
echo "## 64 B units between two processes ($ROUNDS rounds each, alternating; units/s)"
echo
echo "| version | median | rounds |"
echo "|---|---|---|"
echo "| v2 ($BASE) | $mb | ${before[*]} |"
echo "| v3 (this tree) | $ma | ${after[*]} |"
awk -v a="$ma" -v b="$mb" 'BEGIN {printf "\nv3 / v2 = %.3f\n\n", a / b}'

if command -v valgrind >/dev/null; then
  n=100000
  ir() {
    valgrind --tool=callgrind --callgrind-out-file=target/tput64.callgrind \
      --toggle-collect='*one_unit*' "$1" --oneloop "$n" 2>/dev/null
    awk -v n="$n" '/^(summary|totals):/ {print $2 / n; exit}' target/tput64.callgrind
  }
  echo "## Instructions per 64 B unit, one thread, producer + consumer (callgrind, $n units)"
  echo
  echo "| version | instructions |"
  echo "|---|---|"
  echo "| v2 ($BASE) | $(ir "$base/target/release/examples/tput64") |"
  echo "| v3 (this tree) | $(ir target/release/examples/tput64) |"
  echo
fi

cargo bench -q --bench liveness

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import segpool" 2>/dev/null; then
  echo
  "$VENV/bin/python" benches/python/asleep.py
fi
