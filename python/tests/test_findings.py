"""Regression tests for the Python parts of issue 14's findings (4b, 7, 8)
and for the Python wait (signals end it; nothing else wakes it)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import struct
import threading
import time

import pytest
from conftest import put

import segpool

UNITS = 300
SIZE = 256


def payload(writer_id: int, i: int) -> bytes:
    """Unit ``i`` of writer ``writer_id``: every byte of it says so."""
    head = struct.pack("<II", writer_id, i)
    return head + bytes([(writer_id * 31 + i) % 251]) * (SIZE - len(head))


def commit_then_send(pool, writer_id: int, envelopes, seed: int) -> None:
    """Commits UNITS units, then sends their envelopes in a shuffled order."""
    writer = pool.open_writer()
    sent = []
    for i in range(UNITS):
        writer.begin_unit()
        where = writer.write_binary(payload(writer_id, i))
        sent.append((writer_id, i, where, writer.commit_unit()))
    random.Random(seed).shuffle(sent)
    for envelope in sent:
        envelopes.put(envelope)


def restore_all(pool, envelopes, n: int) -> int:
    """Restores ``n`` envelopes; returns how many came out wrong."""
    reader = pool.open_reader()
    wrong = 0
    for _ in range(n):
        writer_id, i, where, span = envelopes.get(timeout=60)
        got = bytes(reader.read_binary(*where))
        reader.end_unit(span, [])
        wrong += got != payload(writer_id, i)
    return wrong


def test_finding_7_two_writer_processes_envelopes_out_of_commit_order(make_pool):
    pool = make_pool(segment_size=SIZE, count=2 * UNITS, acquire_timeout=30)
    envelopes = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=commit_then_send, args=(pool, w, envelopes, w))
        for w in (1, 2)
    ]
    for p in workers:
        p.start()
    wrong = restore_all(pool, envelopes, 2 * UNITS)
    for p in workers:
        p.join(30)
        assert p.exitcode == 0
    assert wrong == 0, f"{wrong} of {2 * UNITS} items paired with another unit's bytes"
    assert pool.published == pool.reclaimed == 2 * UNITS


def test_finding_7_two_writer_threads_envelopes_out_of_commit_order(make_pool):
    import queue

    pool = make_pool(segment_size=SIZE, count=2 * UNITS, acquire_timeout=30)
    envelopes: queue.Queue = queue.Queue()
    threads = [
        threading.Thread(target=commit_then_send, args=(pool, w, envelopes, w)) for w in (1, 2)
    ]
    for t in threads:
        t.start()
    wrong = restore_all(pool, envelopes, 2 * UNITS)
    for t in threads:
        t.join()
    assert wrong == 0, f"{wrong} of {2 * UNITS} items paired with another unit's bytes"
    assert pool.published == pool.reclaimed == 2 * UNITS


def test_finding_7_an_orphaned_commit_with_fixed_size_units_never_passes_silently(make_pool):
    pool = make_pool(segment_size=4096, count=4)
    writer, reader = pool.open_writer(), pool.open_reader()
    (_, orphan_span) = put(writer, b"A" * 1000)  # its envelope is lost
    (where,), span = put(writer, b"B" * 1000)  # same size: the same span once
    # The envelope names its unit: B's bytes, not the orphan's.
    assert bytes(reader.read_binary(*where)) == b"B" * 1000
    reader.end_unit(span, [])
    # The same envelope again (a replay, a duplicate) names a unit that is
    # gone: an error, never another unit's bytes.
    with pytest.raises(segpool.ArenaDesyncError, match="no committed unit"):
        reader.read_binary(*where)
    with pytest.raises(segpool.ArenaDesyncError, match="no committed unit"):
        reader.end_unit(span, [])
    # The orphan holds its segment until something names it.
    assert pool.stats()["free"] == 3
    reader.end_unit(orphan_span, [])
    assert pool.stats()["free"] == 4 and pool.reclaimed == 2


def test_finding_8_a_source_that_aliases_the_destination_copies_as_memmove(make_pool):
    pool = make_pool(segment_size=4096, count=1)
    writer, reader = pool.open_writer(), pool.open_reader()
    seg = pool._segment(0)
    seg[:200] = bytes(range(200))
    writer.begin_unit()
    writer.write_binary(b"x" * 10)  # the next binary goes to offset 64
    # The source is bytes 0..200 of the very segment, overlapping 64..264.
    before = bytes(seg[:200])
    assert before[10:] == bytes(range(10, 200))
    where = writer.write_binary(seg[:200])
    span = writer.commit_unit()
    assert bytes(reader.read_binary(*where)) == before
    reader.end_unit(span, [])


def _wait_child(pid: int, within: float) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child hung for {within}s")


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_finding_4b_fork_while_other_threads_use_the_pool_state(make_pool):
    pool = make_pool(segment_size=4096, count=2, acquire_timeout=30)
    writer = pool.open_writer()
    spans = [put(writer, b"q1")[1], put(writer, b"q2")[1]]  # full: begin_unit blocks
    blocked = threading.Thread(target=writer.begin_unit)  # busy, without the GIL
    stop = threading.Event()

    def hammer() -> None:  # the pool's state, used without pause
        while not stop.is_set():
            pool.stats()
            repr(pool.open_reader())

    busy = threading.Thread(target=hammer)
    blocked.start()
    busy.start()
    deadline = time.monotonic() + 10
    while pool.stats()["waiting_producers"] == 0:
        assert time.monotonic() < deadline, "begin_unit never blocked"
        time.sleep(0.005)
    pid = os.fork()
    if pid == 0:  # the child: only this thread exists here
        code = 1
        try:
            pool.stats()
            reader = pool.open_reader()
            for span in spans:  # frees both (the parent's blocked thread takes one)
                reader.end_unit(span, [])
            # The writer object another thread was inside at the fork.
            (where,), span = put(writer, b"from the child")
            code = 0 if where[1] == 14 else 2
        finally:
            os._exit(code)
    try:
        assert _wait_child(pid, 20) == 0
    finally:
        stop.set()
        busy.join()
        blocked.join(30)
    assert not blocked.is_alive()
    assert pool.published == 3
    writer.abort_unit()


def test_a_signal_whose_handler_returns_lets_begin_unit_wait_on(make_pool):
    pool = make_pool(count=1, acquire_timeout=5)
    writer, reader = pool.open_writer(), pool.open_reader()
    (_,), span = put(writer, b"fills the pool")
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda *_: seen.append(time.monotonic()))
    try:
        threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
        threading.Timer(0.4, reader.end_unit, args=(span, [])).start()
        t0 = time.monotonic()
        writer.begin_unit()  # interrupted once, runs the handler, waits again
        waited = time.monotonic() - t0
    finally:
        signal.signal(signal.SIGUSR1, old)
    writer.abort_unit()
    assert len(seen) == 1 and seen[0] - t0 < 0.35  # the handler ran during the wait
    assert 0.35 <= waited < 4, f"begin_unit returned after {waited:.2f}s"
