#!/usr/bin/env python3
"""Instructions and atomic read-modify-writes per unit, from callgrind.

Usage: callgrind_rmw.py UNITS LABEL=OUT_FILE [LABEL=OUT_FILE ...]

Prints a Markdown table, a row per LABEL (e.g. "segpool v1 | producer"),
then one row per crate (the LABEL's part before " | ") with both sides
summed. Each
OUT_FILE is a `callgrind --dump-instr=yes` profile of one side of
`transport oneloop` (collection toggled on inside `produce_one` or
`consume_one` only, so the profile holds exactly that side's instructions).
For each it prints, per unit:
- Ir: instructions executed;
- RMW: executed instructions that are atomic read-modify-writes on x86-64,
  i.e. `lock`-prefixed ones and `xchg` with a memory operand (implicitly
  locked), found by disassembling every object the profile names with
  `objdump`;
and which functions those RMWs sit in.

An RMW here is any atomic RMW, on shared or on process-local memory
(a reference count); docs/benchmarks.md tells the two apart by reading the
code.
"""

import collections
import re
import subprocess
import sys

_locked_cache = {}


def locked_addresses(obj):
    """Addresses (as in the file) of the atomic RMW instructions of `obj`."""
    if obj in _locked_cache:
        return _locked_cache[obj]
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", obj],
        capture_output=True, text=True, check=False,
    ).stdout
    addrs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)$", line)
        if not m:
            continue
        insn = m.group(2).strip()
        mnemonic = insn.split()[0] if insn else ""
        if mnemonic == "lock" or (mnemonic.startswith("xchg") and "(" in insn):
            addrs[int(m.group(1), 16)] = insn
    _locked_cache[obj] = addrs
    return addrs


def parse(path):
    """(total Ir, {(object, function, address): executions of that instruction})."""
    names = {"ob": {}, "fn": {}}
    ob = fn = None
    addr = 0
    skip_next = False
    costs = collections.Counter()
    total = 0
    name_re = re.compile(r"^(c?ob|c?fn|c?fl|c?fi|c?fe|fl|fi|fe)=\((\d+)\)(?: (.*))?$")
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            m = name_re.match(line)
            if m:
                kind, ident, name = m.group(1), m.group(2), m.group(3)
                base = kind.lstrip("c")
                if base in names:
                    if name is not None:
                        names[base][ident] = name
                    value = names[base].get(ident, ident)
                    if kind == "ob":
                        ob = value
                    elif kind == "fn":
                        fn = value
                continue
            if line.startswith("summary:"):
                total = int(line.split()[1])
                continue
            if line.startswith("calls="):
                # The next line is the inclusive cost of a call, not an
                # instruction's own cost; its position still counts.
                skip_next = True
                continue
            if not line or not (line[0] in "+-*" or line.startswith("0x")):
                continue
            fields = line.split()
            pos = fields[0]
            if pos.startswith("0x"):
                addr = int(pos, 16)
            elif pos[0] in "+-":
                addr += int(pos)
            # "*": same address.
            if skip_next:
                skip_next = False
                continue
            if len(fields) >= 3:
                costs[(ob, fn, addr)] += int(fields[-1])
    return total, costs


def main():
    units = int(sys.argv[1])
    table = ["| crate | side | instructions per unit | atomic RMWs per unit |",
             "|---|---|---:|---:|"]
    details = []
    both = collections.OrderedDict()  # crate -> [instructions, RMWs] per unit
    for arg in sys.argv[2:]:
        label, path = arg.split("=", 1)
        total, costs = parse(path)
        rmw = 0
        where = collections.Counter()
        for (ob, fn, addr), n in costs.items():
            if ob is None:
                continue
            insn = locked_addresses(ob).get(addr)
            if insn is not None:
                rmw += n
                where[(fn, insn)] += n
        table.append(f"| {label} | {total / units:.1f} | {rmw / units:.2f} |")
        sums = both.setdefault(label.split(" | ")[0], [0.0, 0.0])
        sums[0] += total / units
        sums[1] += rmw / units
        details.append(f"\n{label}: where the RMWs are (per unit, instruction, function)\n")
        details.append("```text")
        for (fn, insn), n in sorted(where.items(), key=lambda x: (x[0][0], x[0][1])):
            details.append(f"{n / units:5.2f}  {insn:<36} {fn}")
        details.append("```")
    table += ["", "| crate | instructions per unit, producer + consumer | atomic RMWs per unit, both sides |",
              "|---|---:|---:|"]
    table += [f"| {c} | {ir:.1f} | {rmw:.2f} |" for c, (ir, rmw) in both.items()]
    print("\n".join(table))
    print("\n".join(details))


if __name__ == "__main__":
    main()
