#!/usr/bin/env bash
# Instructions and atomic read-modify-writes per unit, on each side, for the
# frozen v1 crate and the live one: callgrind over `transport oneloop`, a
# single thread that copies a 64 B unit in (`produce_one`: begin_unit,
# write_binary, commit_unit) and takes it out (`consume_one`: recv, read one
# byte, drop), UNITS times. Collection is toggled on inside one of the two
# functions per run, so each profile holds exactly one side; the counts are
# exact (not timed), so this machine's noise does not enter.
#
#   benches/callgrind.sh [UNITS] [OUT_DIR]     (defaults: 100000, benches/results)
#
# Writes OUT_DIR/callgrind-latest.md and prints it. Needs valgrind, objdump
# and python3; about a minute here, most of it building.
set -euo pipefail
cd "$(dirname "$0")/.."
units=${1:-100000}
out=${2:-benches/results}
work=benches/peers/target/callgrind
mkdir -p "$work" "$out"
nice -n 10 cargo build --release --manifest-path benches/peers/Cargo.toml
bin=benches/peers/target/release/transport
runs=()
for crate in v1 live; do
  for side in produce consume; do
    file=$work/$crate-$side.out
    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$file" \
      --toggle-collect="*pools::$crate::${side}_one*" \
      "$bin" oneloop "$crate" "$units" 2>"$work/$crate-$side.log"
    label=$([ "$crate" = v1 ] && echo "segpool v1" || echo "segpool")
    what=$([ "$side" = produce ] && echo "producer" || echo "consumer")
    runs+=("$label | $what=$file")
  done
done
{
  echo "### callgrind: one thread, 64 B units, copy-in, pool of 64 ($units units, $(date -u +%FT%TZ))"
  echo
  python3 benches/callgrind_rmw.py "$units" "${runs[@]}"
} | tee "$out/callgrind-latest.md"
