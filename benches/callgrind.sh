#!/usr/bin/env bash
# Instructions and atomic read-modify-writes per unit, on each side, for
# pinned old versions of the crate and the live one: callgrind over
# `oneloop`, a single thread that copies a 64 B unit in (`produce_one`:
# begin_unit, write_binary, commit_unit) and takes it out (`consume_one`:
# recv, read one byte, drop), UNITS times. The live crate's loop is
# `transport oneloop` (benches/peers); an old version's is its runner's
# (`pinned-<name> oneloop`, built from the pinned commit by
# benches/pinned.sh), the same source file (benches/peers/src/pools.rs)
# compiled against the old crate. Collection is toggled on inside one of
# the two functions per run, so each profile holds exactly one side; the
# counts are exact (not timed), so this machine's noise does not enter.
#
#   benches/callgrind.sh [UNITS] [OUT_DIR]     (defaults: 100000, benches/results)
#   PINNED="v1 v3" benches/callgrind.sh        the old versions to count (default
#                                              v1 v3; PINNED= for none)
#
# Writes OUT_DIR/callgrind-latest.md and prints it. Needs valgrind, objdump
# and python3; about a minute here, most of it building.
set -euo pipefail
cd "$(dirname "$0")/.."
units=${1:-100000}
out=${2:-benches/results}
pinned=${PINNED-v1 v3}
work=benches/peers/target/callgrind
mkdir -p "$work" "$out"
nice -n 10 cargo build --release --manifest-path benches/peers/Cargo.toml
crates=()  # "label=binary"
if [ -n "$pinned" ]; then
  # shellcheck disable=SC2086 # a list of names
  while read -r name rev bin; do
    crates+=("segpool $name (${rev:0:7})=$bin")
  done < <(nice -n 10 bash benches/pinned.sh $pinned)
fi
crates+=("segpool (live)=benches/peers/target/release/transport")
runs=()
for c in "${crates[@]}"; do
  label=${c%%=*}
  bin=${c#*=}
  tag=$(echo "$label" | tr -c 'a-z0-9\n' '-')
  for side in produce consume; do
    file=$work/$tag-$side.out
    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$file" \
      --toggle-collect="*pools::${side}_one*" \
      "$bin" oneloop "$units" 2>"$work/$tag-$side.log"
    what=$([ "$side" = produce ] && echo "producer" || echo "consumer")
    runs+=("$label | $what=$file")
  done
done
{
  echo "### callgrind: one thread, 64 B units, copy-in, pool of 64 ($units units, $(date -u +%FT%TZ))"
  echo
  python3 benches/callgrind_rmw.py "$units" "${runs[@]}"
} | tee "$out/callgrind-latest.md"
