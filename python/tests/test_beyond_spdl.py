"""What segpool adds to SPDL's pool: out-of-order reclaim, fork safety,
desync detection, the loan call, stats, signals and the GIL."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest
from conftest import put

import segpool


def test_releasing_the_newer_view_frees_exactly_its_segment(make_pool):
    pool = make_pool(segment_size=4096, count=2, acquire_timeout=0)
    writer, reader = pool.open_writer(), pool.open_reader()
    (w_old,), span = put(writer, b"O" * 1000)
    older = reader.read_binary(*w_old)
    reader.end_unit(span, [])
    (w_new,), span = put(writer, b"N" * 1000)
    newer = reader.read_binary(*w_new)
    reader.end_unit(span, [])
    del newer
    assert pool.reclaimed == 1
    assert pool.stats()["held"] == 1 and pool.stats()["free"] == 1
    # The freed segment takes the next unit at once (SPDL's pool would stall
    # behind the older view), and the older view is untouched by it.
    (w_next,), span = put(writer, b"X" * 4000)
    assert bytes(older) == b"O" * 1000
    with pytest.raises(BufferError):
        writer.begin_unit()  # the older view still holds its segment
    assert bytes(reader.read_binary(*w_next)) == b"X" * 4000
    reader.end_unit(span, [])


def test_a_forked_child_that_drops_inherited_views_leaves_them_held(make_pool):
    pool = make_pool(segment_size=1 << 16, count=3, acquire_timeout=2)
    writer, reader = pool.open_writer(), pool.open_reader()
    views = []
    for i in range(2):
        (where,), span = put(writer, bytes([65 + i]) * 5000)
        views.append(np.frombuffer(reader.read_binary(*where), np.uint8))
        reader.end_unit(span, [])
    before = pool.stats()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            views.clear()
            gc.collect()
            # The inherited pool still works here: it attaches again through
            # the inherited memfd and the child writes one unit.
            (where,), span = put(pool.open_writer(), b"from the child")
            os.write(wfd, pickle.dumps((where, span)))
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as envelope:
        where, span = pickle.loads(envelope.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    after = pool.stats()
    assert after["held"] == before["held"] == 2, after
    assert after["reclaimed"] == before["reclaimed"] == 0
    assert after["published"] == 3  # the child's unit
    assert [int(v[0]) for v in views] == [65, 66] and all(v.min() == v.max() for v in views)
    assert bytes(reader.read_binary(*where)) == b"from the child"
    reader.end_unit(span, [])


def test_an_envelope_that_names_no_unit_is_a_desync(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    with pytest.raises(segpool.ArenaDesyncError, match="not one that write_binary"):
        reader.read_binary(0, 10)  # a bare offset, not a token
    (where,), span = put(writer, b"a" * 100)
    reader.end_unit(span, [])
    with pytest.raises(segpool.ArenaDesyncError, match="no committed unit"):
        reader.end_unit(span, [])  # the same envelope twice
    with pytest.raises(segpool.ArenaDesyncError, match="no committed unit"):
        reader.read_binary(*where)
    with pytest.raises(segpool.ArenaDesyncError, match="not one that commit_unit"):
        reader.end_unit(-1, [])


def test_a_read_past_the_unit_is_a_desync(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    (where,), span = put(writer, b"a" * 100)
    with pytest.raises(segpool.ArenaDesyncError, match="run past"):
        reader.read_binary(where[0], 1000)
    reader.end_unit(span, [])
    assert issubclass(segpool.ArenaDesyncError, RuntimeError)


def test_reading_another_unit_while_one_is_open_is_a_desync(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    (first,), span1 = put(writer, b"1" * 10)
    (second,), span2 = put(writer, b"2" * 10)
    assert bytes(reader.read_binary(*first)) == b"1" * 10
    with pytest.raises(segpool.ArenaDesyncError, match="still open"):
        reader.read_binary(*second)
    reader.end_unit(span1, [])
    assert bytes(reader.read_binary(*second)) == b"2" * 10
    reader.end_unit(span2, [])
    assert pool.reclaimed == 2


def test_the_loan_call_decodes_straight_into_the_segment(make_pool):
    pool = make_pool(segment_size=1 << 20)
    writer, reader = pool.open_writer(), pool.open_reader()
    writer.begin_unit()
    offset, loan = writer.reserve(256 * 256 * 3)
    image = np.frombuffer(loan, dtype=np.uint8).reshape(256, 256, 3)
    image[...] = np.arange(256, dtype=np.uint8)[:, None, None]  # "decode" in place
    with pytest.raises(BufferError, match="reserve"):
        writer.commit_unit()  # the loan is still alive
    del image, loan
    assert writer.unit_len == 256 * 256 * 3
    span = writer.commit_unit()
    assert offset % 64 == 0
    got = np.frombuffer(reader.read_binary(offset, 256 * 256 * 3), np.uint8).reshape(256, 256, 3)
    assert np.array_equal(got[:, 0, 0], np.arange(256))
    reader.end_unit(span, [])


def test_an_aborted_unit_with_a_live_loan_frees_its_segment_when_the_loan_goes(make_pool):
    pool = make_pool(count=1, acquire_timeout=0)
    writer = pool.open_writer()
    writer.begin_unit()
    _, loan = writer.reserve(100)
    writer.abort_unit()
    assert pool.stats()["writing"] == 1  # the loan still points into it
    del loan
    assert pool.stats()["free"] == 1 and pool.published == 0


def test_stats_counts_segments_per_phase(make_pool):
    pool = make_pool(count=4)
    writer, reader = pool.open_writer(), pool.open_reader()
    (where,), span = put(writer, b"held")
    view = reader.read_binary(*where)
    reader.end_unit(span, [])
    put(writer, b"queued")
    writer.begin_unit()
    s = pool.stats()
    assert (s["free"], s["writing"], s["queued"], s["held"]) == (1, 1, 1, 1)
    assert (s["published"], s["reclaimed"], s["generation"]) == (2, 0, 0)
    assert s["waiting_producers"] == s["waiting_consumers"] == 0 and s["shutdown"] is False
    writer.abort_unit()
    del view


def test_ctrl_c_interrupts_a_blocked_begin_unit_within_100ms(make_pool, ctrl_c):
    pool = make_pool(count=1, acquire_timeout=30)
    writer = pool.open_writer()
    put(writer, b"fills the pool")
    sent = []

    def interrupt():
        time.sleep(0.3)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        writer.begin_unit()
    assert time.monotonic() - sent[0] < 0.1


def test_the_gil_is_released_while_begin_unit_waits(make_pool):
    pool = make_pool(count=1, acquire_timeout=0.5)
    writer = pool.open_writer()
    put(writer, b"fills the pool")
    ticks = 0
    stop = threading.Event()

    def spin():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.05)
    start = ticks
    with pytest.raises(BufferError):
        writer.begin_unit()
    progress = ticks - start
    stop.set()
    t.join()
    assert progress > 10_000, f"another thread ran only {progress} loops in 0.5s"


def test_the_pool_pickles_within_a_process(make_pool):
    pool = make_pool(segment_size=8192, count=2, acquire_timeout=1.5)
    clone = pickle.loads(pickle.dumps(pool))
    try:
        assert (clone.segment_size, clone.count, clone.acquire_timeout) == (8192, 2, 1.5)
        (where,), span = put(clone.open_writer(), b"through the clone")
        reader = pool.open_reader()
        assert bytes(reader.read_binary(*where)) == b"through the clone"
        reader.end_unit(span, [])
        assert clone.reclaimed == 1
    finally:
        clone.close()


def test_writer_misuse_says_what_to_do(make_pool):
    writer = make_pool().open_writer()
    with pytest.raises(RuntimeError, match="begin_unit"):
        writer.write_binary(b"no unit")
    writer.begin_unit()
    with pytest.raises(RuntimeError, match="commit_unit"):
        writer.begin_unit()
    with pytest.raises(TypeError):
        writer.write_binary(12)
    with pytest.raises(BufferError, match="contiguous"):
        writer.write_binary(np.zeros((4, 4))[:, 1])
    writer.abort_unit()


def test_an_infinite_timeout_waits_for_a_release(make_pool):
    pool = make_pool(count=1, acquire_timeout=float("inf"))
    writer, reader = pool.open_writer(), pool.open_reader()
    _, span = put(writer, b"held")
    threading.Timer(0.2, reader.end_unit, args=(span, [])).start()
    writer.begin_unit()
    writer.abort_unit()
    clone = pickle.loads(pickle.dumps(pool))
    assert clone.acquire_timeout == float("inf")
    clone.close()
    with pytest.raises(ValueError, match="acquire_timeout"):
        segpool.SharedMemorySegmentPool(4096, 1, acquire_timeout=float("nan"))
