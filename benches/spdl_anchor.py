"""SPDL anchor: SPDL's own SharedMemorySegmentPool over the payload sizes of
the segpool transport benchmark, printing the same columns.

Layout as SPDL uses it: the writer runs in a worker process (begin_unit,
write_binary, commit_unit), the reader in the parent; the unit's metadata
(offset, nbytes, span) travels through a multiprocessing queue, as in
``iterate_in_subprocess``. The parent wraps each payload in a zero-copy
NumPy array, touches one byte or sums every byte, and hands the array to
``end_unit`` as the anchor; dropping it reclaims the segment.

Run through benches/spdl_anchor.sh (which makes the virtual environment).
"""

import argparse
import csv
import multiprocessing as mp
import os
import resource
import sys
import time

import numpy as np
from spdl.pipeline import SharedMemorySegmentPool

SIZES = [64, 4 << 10, 64 << 10, 1 << 20, 8 << 20, 32 << 20]


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def depth_for(size: int) -> int:
    """Same as the Rust benchmark: 16 MiB worth of segments, 4 to 64."""
    return max(4, min(64, (16 << 20) // size))


def producer(pool, meta, size, duration, warmup):
    writer = pool.open_writer()
    src = (np.arange(size, dtype=np.uint64) * 7).astype(np.uint8).tobytes()

    def one():
        writer.begin_unit()
        off, n = writer.write_binary(src)
        span = writer.commit_unit()
        meta.put((off, n, span))

    for _ in range(warmup):
        one()
    t0, c0 = time.monotonic(), cpu_self()
    n = 0
    while n == 0 or time.monotonic() - t0 < duration:
        one()
        n += 1
    meta.put(("done", n, cpu_self() - c0))


def size_name(s: int) -> str:
    if s >= 1 << 20:
        return f"{s >> 20} MiB"
    if s >= 1 << 10:
        return f"{s >> 10} KiB"
    return f"{s} B"


def run_cell(size, consume, duration):
    depth = depth_for(size)
    warmup = 2 * depth
    pool = SharedMemorySegmentPool(size, depth, acquire_timeout=60.0)
    meta = mp.Queue()
    proc = mp.Process(target=producer, args=(pool, meta, size, duration, warmup))
    proc.start()
    reader = pool.open_reader()
    seen, acc = 0, 0
    t0 = c0 = None
    while True:
        msg = meta.get()
        if msg[0] == "done":
            _, prod_units, prod_cpu = msg
            break
        off, n, span = msg
        arr = np.frombuffer(reader.read_binary(off, n), dtype=np.uint8)
        if consume == "touch":
            acc += int(arr[0])
        else:
            acc += int(arr.view(np.uint64).sum())
        reader.end_unit(span, [arr])
        del arr  # the anchor goes: the segment is reclaimed
        seen += 1
        if seen == warmup:
            t0, c0 = time.monotonic(), cpu_self()
    secs, cons_cpu = time.monotonic() - t0, cpu_self() - c0
    proc.join()
    units = seen - warmup
    assert units == prod_units, (units, prod_units)
    pool.shutdown_arena()
    pool.close()
    pool.unlink()
    gb = units * size / 1e9
    return {
        "consume": consume,
        "size_bytes": size,
        "transport": "spdl-pool",
        "units_per_s": units / secs,
        "gb_per_s": gb / secs,
        "producer_cpu_s_per_gb": prod_cpu / gb,
        "consumer_cpu_s_per_gb": cons_cpu / gb,
        "consumer_cpu_us_per_unit": cons_cpu * 1e6 / units,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    duration = 0.3 if args.quick else 1.0
    rows = []
    for consume in ("touch", "checksum"):
        for size in SIZES:
            r = run_cell(size, consume, duration)
            print(
                f"{consume:8} {size_name(size):>7} {r['units_per_s']:>12.0f} units/s "
                f"{r['gb_per_s']:8.3f} GB/s",
                file=sys.stderr,
            )
            rows.append(r)
    os.makedirs(args.out, exist_ok=True)
    mode = "quick" if args.quick else "full"
    path = os.path.join(args.out, f"spdl-latest-{mode}.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print("| consumer | size | transport | units/s | GB/s | producer CPU s/GB | consumer CPU s/GB | consumer CPU µs/unit |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['consume']} | {size_name(r['size_bytes'])} | spdl-pool | {r['units_per_s']:.0f} "
            f"| {r['gb_per_s']:.3f} | {r['producer_cpu_s_per_gb']:.3f} "
            f"| {r['consumer_cpu_s_per_gb']:.3f} | {r['consumer_cpu_us_per_unit']:.1f} |"
        )
    import spdl

    print(f"\nSPDL {getattr(spdl, '__version__', '?')}, NumPy {np.__version__}; CSV: {path}")


if __name__ == "__main__":
    main()
