"""segpool's Python pool against SPDL's, through SPDL's iterate_in_subprocess.

One run alternates the arms cell by cell (round-robin over repetitions), so
drift on a shared machine lands on every arm alike:

- ``none``: no arena; the item is pickled through the data queue.
- ``spdl``: SPDL's own ``SharedMemorySegmentPool``.
- ``segpool``: ``segpool.SharedMemorySegmentPool``, same arguments.
- ``segpool-loan``: segpool's loan call in a plain worker loop (not
  ``iterate_in_subprocess``, whose worker owns the writer): the worker
  "decodes" (copies its source) straight into the segment with
  ``writer.reserve``; the envelope ``(offset, nbytes, span)`` travels through
  a multiprocessing queue as SPDL's does.

The worker yields the same prebuilt NumPy array every time, so its CPU is the
transport's (for the loan arm, the one copy a decoder would make anyway).
The parent reads one byte of each item and drops it. The measured window
opens before the pool is created and closes after teardown (the worker
joined, the pool closed and unlinked): SPDL's pool faults its pages in
lazily, and so does segpool's by default (`prefault=False`); both are
the same work. CPU is
getrusage: the parent's own (RUSAGE_SELF, threads included) and the
worker's (RUSAGE_CHILDREN, reaped at teardown).

The baseline rows send items below SPDL's offload threshold (1 KiB arrays,
pickled inline): with no arena, the machinery's own cost per item, which no
arena removes ("arena share" is the part of the parent's CPU per item above
it); with segpool's pool, the same plus an empty unit per item.

    python benches/python/bench_iterate.py [--quick] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import functools
import gc
import multiprocessing as mp
import resource
import sys
import time

import numpy as np
import spdl.pipeline
from spdl.pipeline import iterate_in_subprocess

import segpool

MiB = 1 << 20
CTX = "fork"


def cpu() -> tuple[float, float]:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


class Source:
    """``n`` items, each the same prebuilt array of ``nbytes``."""

    def __init__(self, n: int, nbytes: int) -> None:
        self.n, self.nbytes = n, nbytes
        self.arr = np.full(nbytes, 7, dtype=np.uint8)

    def __iter__(self):
        for i in range(self.n):
            yield {"i": i, "x": self.arr}


def make_source(n: int, nbytes: int) -> Source:
    return Source(n, nbytes)


def run_pipeline(arena_kind: str, nbytes: int, n: int, count: int) -> tuple[float, float, float]:
    gc.collect()
    t0, (p0, c0) = time.perf_counter(), cpu()
    if arena_kind == "none":
        arena = None
    elif arena_kind == "spdl":
        arena = spdl.pipeline.SharedMemorySegmentPool(nbytes + 4096, count)
    else:
        arena = segpool.SharedMemorySegmentPool(nbytes + 4096, count)
    src = iterate_in_subprocess(
        functools.partial(make_source, n, nbytes), arena=arena, mp_context=CTX, buffer_size=3
    )
    seen = 0
    for item in src:
        seen += int(item["x"][0]) == 7
        del item
    assert seen == n, (arena_kind, seen, n)
    src._shutdown()  # teardown inside the window: join, close, unlink
    del src
    t1, (p1, c1) = time.perf_counter(), cpu()
    return t1 - t0, p1 - p0, c1 - c0


def loan_worker(pool, meta, n: int, nbytes: int) -> None:
    src = np.full(nbytes, 7, dtype=np.uint8)
    writer = pool.open_writer()
    for _ in range(n):
        writer.begin_unit()
        offset, loan = writer.reserve(nbytes)
        np.copyto(np.frombuffer(loan, dtype=np.uint8), src)  # the "decoder"
        del loan
        meta.put((offset, nbytes, writer.commit_unit()))
    meta.put(None)


def run_loan(nbytes: int, n: int, count: int) -> tuple[float, float, float]:
    gc.collect()
    ctx = mp.get_context(CTX)
    t0, (p0, c0) = time.perf_counter(), cpu()
    pool = segpool.SharedMemorySegmentPool(nbytes + 4096, count)
    meta = ctx.Queue(maxsize=3)
    proc = ctx.Process(target=loan_worker, args=(pool, meta, n, nbytes))
    proc.start()
    reader = pool.open_reader()
    seen = 0
    while (env := meta.get()) is not None:
        offset, size, span = env
        arr = np.frombuffer(reader.read_binary(offset, size), dtype=np.uint8)
        reader.end_unit(span, [arr])
        seen += int(arr[0]) == 7
        del arr
    proc.join()
    pool.shutdown_arena()
    pool.close()
    pool.unlink()
    t1, (p1, c1) = time.perf_counter(), cpu()
    assert seen == n
    return t1 - t0, p1 - p0, c1 - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="256 MiB per cell, 2 repetitions")
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args()
    per_cell = (256 if args.quick else 1024) * MiB
    reps = 2 if args.quick else 3
    sizes = [1 * MiB, 8 * MiB, 32 * MiB]
    arms = ["none", "spdl", "segpool", "segpool-loan"]
    count = 8
    base_n = 2000 if args.quick else 5000

    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    baseline: list[tuple[float, float, float]] = []
    baseline_pool: list[tuple[float, float, float]] = []
    for rep in range(reps):
        baseline.append(run_pipeline("none", 1024, base_n, count))
        baseline_pool.append(run_pipeline("segpool", 1024, base_n, count))
        for size in sizes:
            n = per_cell // size
            for arm in arms:
                r = run_loan(size, n, count) if arm == "segpool-loan" else run_pipeline(arm, size, n, count)
                results.setdefault((arm, size), []).append(r)
                print(f"rep {rep} {arm:13s} {size >> 20:3d} MiB: {r[0]:.3f}s wall "
                      f"{r[1]:.3f}s parent {r[2]:.3f}s worker", file=sys.stderr)

    def best(runs):  # the median repetition by wall time
        return sorted(runs)[len(runs) // 2]

    _, bp, _ = best(baseline)
    base_us = bp / base_n * 1e6
    lines = [
        "| payload | arena | GB/s | parent CPU s/GB | worker CPU s/GB | both, s/GB | parent µs/item | arena's share of parent CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        n = per_cell // size
        gb = n * size / 1e9
        for arm in arms:
            wall, par, wrk = best(results[(arm, size)])
            us = par / n * 1e6
            share = max(0.0, (us - base_us) / us) if arm != "none" else float("nan")
            share_s = "n/a" if arm == "none" else f"{share:.0%}"
            lines.append(
                f"| {size >> 20} MiB | {arm} | {gb / wall:.2f} | {par / gb:.3f} | {wrk / gb:.3f} "
                f"| {(par + wrk) / gb:.3f} | {us:.0f} | {share_s} |"
            )
    _, bpp, _ = best(baseline_pool)
    lines.append(f"| 1 KiB inline (baseline) | none | - | - | - | - | {base_us:.0f} | - |")
    lines.append(
        f"| 1 KiB inline (baseline) | segpool (empty unit) | - | - | - | - | {bpp / base_n * 1e6:.0f} | - |"
    )
    # What one pool of the largest size costs the parent to create and tear down.
    gc.collect()
    c0 = cpu()[0]
    pool = segpool.SharedMemorySegmentPool(sizes[-1] + 4096, count)
    c1 = cpu()[0]
    pool.close()
    del pool
    gc.collect()
    c2 = cpu()[0]
    lines.append("")
    lines.append(
        f"segpool pool of {count} x {sizes[-1] >> 20} MiB, parent CPU: create (prefault) "
        f"{c1 - c0:.3f} s, close (pages freed) {c2 - c1:.3f} s"
    )
    table = "\n".join(lines)
    print(table)
    print(f"\n{n} items per cell at the largest size; {reps} repetitions, median shown; "
          f"baseline {base_n} items", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
