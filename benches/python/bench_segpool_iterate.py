"""segpool.iterate_in_subprocess against SPDL's iterate_in_subprocess (issue 16).

Three arms, alternated cell by cell in one run (round-robin over rounds, so
drift on a shared machine lands on every arm alike, and the order of the
arms rotates from round to round), NumPy items of 4 KiB to 32 MiB:

- ``segpool``: ``segpool.iterate_in_subprocess`` (whole items through the
  pool; the parent sleeps in ``Reader.recv`` when idle);
- ``spdl``: SPDL's ``iterate_in_subprocess`` with SPDL's
  ``SharedMemorySegmentPool``;
- ``spdl+segpool``: SPDL's with ``segpool.SharedMemorySegmentPool``.

The generator copies a prebuilt array once per item (as a decoder makes its
output); the parent reads one byte of each item and drops it. The window
opens before the pool and workers are made and closes after teardown (the
cyclic garbage collector runs before and after it, outside); CPU is
getrusage (parent: RUSAGE_SELF; worker: RUSAGE_CHILDREN, reaped at
teardown), per item. Medians of the rounds by wall time. Start method fork.
Each cell moves up to ``--budget`` MiB, at most 20,000 items.

The dict rows: items ``{"image": array, "index": i, "label": "..."}`` of
64 KiB, which take segpool's pickle path (a bare array takes none).

The scaling rows: a generator that burns about 1 ms of CPU per item (64 KiB
items), segpool with 1 and 2 workers, unordered and ordered.

    python benches/python/bench_segpool_iterate.py [--rounds N] [--budget S] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time

import numpy as np
import spdl.pipeline
from spdl.pipeline import iterate_in_subprocess as spdl_iterate

import segpool

KiB, MiB = 1 << 10, 1 << 20
CTX = "fork"
SIZES = [4 * KiB, 64 * KiB, 256 * KiB, MiB, 8 * MiB, 32 * MiB]


def cpu() -> tuple[float, float]:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


class Source:
    def __init__(self, n: int, nbytes: int, burn_ms: float = 0.0, as_dict: bool = False) -> None:
        self.n, self.nbytes, self.burn, self.as_dict = n, nbytes, burn_ms / 1e3, as_dict

    def __call__(self):
        base = np.ones(self.nbytes, np.uint8)
        for i in range(self.n):
            if self.burn:
                t = time.thread_time() + self.burn
                while time.thread_time() < t:
                    pass
            if self.as_dict:
                yield {"image": base.copy(), "index": i, "label": "a label"}
            else:
                yield base.copy()


def run(arm: str, nbytes: int, n: int, workers: int = 1, burn: float = 0.0,
        ordered: bool | None = None, as_dict: bool = False):
    gc.collect()
    c0, w0 = cpu()
    t0 = time.perf_counter()
    seg = nbytes + 64 * KiB
    if arm == "segpool":
        it = segpool.iterate_in_subprocess(
            Source(n // workers, nbytes, burn, as_dict), num_workers=workers, mp_context=CTX,
            segment_size=seg, ordered=workers == 1 if ordered is None else ordered)
    else:
        pool_t = spdl.pipeline.SharedMemorySegmentPool if arm == "spdl" else \
            segpool.SharedMemorySegmentPool
        it = spdl_iterate(Source(n, nbytes, burn, as_dict), mp_context=CTX, arena=pool_t(seg, 8))
    got = 0
    for item in it:
        got += int((item["image"] if as_dict else item)[0])
        del item
    if arm == "segpool":
        it.close()
    del it
    wall = time.perf_counter() - t0
    c1, w1 = cpu()
    gc.collect()
    assert got == n, (arm, got, n)
    return wall, (c1 - c0) / n, (w1 - w0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=512.0, help="MiB per cell and round")
    ap.add_argument("--out")
    a = ap.parse_args()
    arms = ["segpool", "spdl", "spdl+segpool"]
    res: dict[tuple[str, int, bool], list] = {}
    load0 = os.getloadavg()[0]
    cells = [(size, False) for size in SIZES] + [(64 * KiB, True)]
    for r in range(a.rounds):
        for size, as_dict in cells:
            n = max(8, min(20000, int(a.budget * MiB) // size))
            for arm in arms[r % 3:] + arms[:r % 3]:  # each arm first in some round
                res.setdefault((arm, size, as_dict), []).append(
                    (*run(arm, size, n, as_dict=as_dict), n))
    lines = ["| item | arm | items/s | GB/s | parent µs/item | worker µs/item |",
             "|---|---|---|---|---|---|"]
    for size, as_dict in cells:
        for arm in arms:
            runs = sorted(res[(arm, size, as_dict)])
            wall, pc, wc, n = runs[len(runs) // 2]
            ips = n / wall
            label = f"{size // KiB} KiB" if size < MiB else f"{size // MiB} MiB"
            if as_dict:
                label += " dict"
            lines.append(f"| {label} | {arm} | {ips:,.0f} | {ips * size / 1e9:.2f} | "
                         f"{pc * 1e6:.1f} | {wc * 1e6:.1f} |")
    scale: dict[tuple[int, bool], list[float]] = {}
    for r in range(max(3, a.rounds)):
        for w, ordered in ((1, True), (2, False), (2, True)):
            scale.setdefault((w, ordered), []).append(
                run("segpool", 64 * KiB, 1000, workers=w, burn=1.0, ordered=ordered)[0])
    s1 = 1000 / statistics.median(scale[(1, True)])
    lines += ["", "| scaling (1 ms CPU/item, 64 KiB) | items/s |", "|---|---|",
              f"| 1 worker | {s1:,.0f} |"]
    for ordered in (False, True):
        s2 = 1000 / statistics.median(scale[(2, ordered)])
        lines.append(f"| 2 workers, {'ordered' if ordered else 'unordered'} | {s2:,.0f} "
                     f"({s2 / s1:.2f}x) |")
    lines += ["", f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
