#!/usr/bin/env bash
# Issue 17's table in one run, as docs/benchmarks.md shows it: instructions
# per 64 B unit before and after (callgrind, exact), 64 B units/s between
# two processes against iceoryx2 and the previous version at pool depths 16
# and 64 (copy-in and loan, the consumer touching the bytes; paired ratios),
# and ping-pong p50 / p99 against iceoryx2's (alternating chunks).
#
#   bash benches/fastpath.sh [transport fastpath options]
#   BEFORE=v3 (default; a name benches/pinned.sh knows) picks the previous version
#
# e.g. `bash benches/fastpath.sh --rounds 20`. Writes
# benches/results/fastpath-latest.md and prints it. Without valgrind the
# instructions row is left out. About 3 minutes after the builds.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${BEFORE:-v3}
out=benches/results
instr=()
if command -v valgrind >/dev/null; then
  PINNED=$before bash benches/callgrind.sh 100000 target/fastpath-callgrind >/dev/null
  # The per-crate sums: "| segpool v3 (a4619cc) | 881.0 | 16.00 |".
  sums=$(grep -E '^\| segpool [^|]* \| [0-9.]+ \| [0-9.]+ \|$' target/fastpath-callgrind/callgrind-latest.md)
  b=$(echo "$sums" | awk -F'|' -v n="segpool $before " 'index($2, n) == 2 {gsub(/ /, "", $3); print $3}')
  a=$(echo "$sums" | awk -F'|' 'index($2, "segpool (live)") {gsub(/ /, "", $3); print $3}')
  instr=(--instructions "$b,$a")
fi
cargo build -q --release --manifest-path benches/peers/Cargo.toml
benches/peers/target/release/transport fastpath --before "$before" "${instr[@]}" "$@" |
  tee "$out/fastpath-latest.md"
