"""End to end through SPDL's iterate_in_subprocess, under every start method.

Each test runs with ``mp_context`` None (the default, which conftest sets
from SEGPOOL_START_METHOD) and with a method that differs from the default
(``conftest.contexts``), so every run of the suite covers a context that
differs from the default one: SPDL's own pool fails there, because its
Condition belongs to one context.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import time

import _workers
import numpy as np
import pytest
from conftest import contexts, require_spdl

import segpool

require_spdl()
from spdl.pipeline import iterate_in_subprocess  # noqa: E402

CONTEXTS = contexts()


def run(fn, pool, ctx, **kw):
    return iterate_in_subprocess(fn, arena=pool, mp_context=ctx, timeout=60, **kw)


@pytest.fixture(params=CONTEXTS, ids=lambda c: c or "default")
def ctx(request):
    return request.param


def test_items_arrive_intact_and_every_segment_comes_back(ctx):
    nbytes = 1 << 18
    pool = segpool.SharedMemorySegmentPool(1 << 20, 4)
    src = run(functools.partial(_workers.items, 30, nbytes), pool, ctx)
    for i, got in enumerate(src):
        _workers.check(got, i, nbytes)
    assert i == 29
    del got
    assert (pool.published, pool.reclaimed) == (30, 30)


def test_views_held_across_abandoned_passes_stay_valid(ctx):
    nbytes = 1 << 16
    pool = segpool.SharedMemorySegmentPool(1 << 18, 12, acquire_timeout=20)
    src = run(functools.partial(_workers.items, 8, nbytes), pool, ctx, buffer_size=2)
    kept = []
    for _ in range(3):  # three abandoned passes, holding two items of each
        it = iter(src)
        kept += [next(it), next(it)]
        it.close()
    for i, got in enumerate(src):  # then a full pass
        _workers.check(got, i, nbytes)
    assert i == 7
    for n, got in enumerate(kept):
        _workers.check(got, n % 2, nbytes)
    del got, kept
    gc.collect()
    stats = pool.stats()
    assert stats["held"] == 0 and stats["queued"] == 0, stats


def test_a_worker_exception_propagates_as_runtime_error(ctx):
    pool = segpool.SharedMemorySegmentPool(1 << 16, 4)
    src = run(_workers.failing, pool, ctx)
    it = iter(src)
    _workers.check(next(it), 0, 1 << 14)
    with pytest.raises(RuntimeError, match="the worker's own error"):
        next(it)


def test_a_worker_that_dies_does_not_hang_the_parent(ctx):
    pool = segpool.SharedMemorySegmentPool(1 << 16, 4)
    src = run(_workers.dying, pool, ctx)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        for _ in src:
            pass
    assert time.monotonic() - t0 < 15


def test_closing_while_the_worker_is_blocked_on_a_full_pool_tears_down_promptly(ctx):
    pool = segpool.SharedMemorySegmentPool(1 << 16, 2, acquire_timeout=60)
    src = run(_workers.endless, pool, ctx, buffer_size=1)
    it = iter(src)
    held = [next(it), next(it)]  # both segments held: the worker blocks
    deadline = time.monotonic() + 10
    while pool.stats()["waiting_producers"] == 0:
        assert time.monotonic() < deadline, "the worker never blocked"
        time.sleep(0.01)
    process = src._interface.process  # to check it is gone, not to drive it
    t0 = time.monotonic()
    it.close()
    del it, src
    gc.collect()
    took = time.monotonic() - t0
    assert not process.is_alive()
    # SPDL joins for 3 s before it terminates: a prompt teardown is the
    # worker waking from shutdown_arena and leaving on its own.
    assert took < 2.5, f"teardown took {took:.2f}s"
    assert process.exitcode == 0
    assert bytes(held[1]["extra"][1]) == b"x" * 5000  # still readable


def test_the_default_start_method_is_what_conftest_set():
    from conftest import START_METHOD

    if START_METHOD:
        assert multiprocessing.get_start_method() == START_METHOD


def test_the_first_unit_of_a_fresh_pool_lands_in_segment_0(ctx):
    # SPDL's tests write through pool._segment(0) to prove that restored views
    # alias shared memory, whichever process wrote the first unit.
    pool = segpool.SharedMemorySegmentPool(1 << 20, 4)
    src = run(functools.partial(_workers.items, 1, 1 << 16), pool, ctx)
    (got,) = list(src)
    seg0 = np.frombuffer(pool._segment(0), np.uint8)
    start = got["payload"].ctypes.data - seg0.ctypes.data
    assert 0 <= start and start + got["payload"].nbytes <= seg0.nbytes
    seg0[start] = 201
    assert got["payload"][0] == 201
