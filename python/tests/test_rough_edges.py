"""Issue 15's rough edges, each reproduced as a user met it, now fixed."""

from __future__ import annotations

import concurrent.futures
import ctypes
import gc
import multiprocessing
import os
import pickle
import threading
import time
import weakref

import numpy as np
import pytest
from conftest import put

import segpool


def _memfd_inode(pool) -> int:
    return os.fstat(pool._pool._fd()).st_ino


def _held_by_this_process(inode: int) -> list[str]:
    """Descriptors and mappings of this process that reach the inode."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.stat(f"/proc/self/fd/{fd}").st_ino == inode and "memfd" in os.readlink(
                f"/proc/self/fd/{fd}"
            ):
                found.append(f"fd {fd}")
        except OSError:
            pass
    with open("/proc/self/maps") as maps:
        found += [line for line in maps if "memfd" in line and int(line.split()[4]) == inode]
    return found


def test_an_unloaded_pickle_does_not_keep_the_pool_alive():
    pool = segpool.SharedMemorySegmentPool(1 << 20, 4)
    inode = _memfd_inode(pool)
    blob = pickle.dumps(pool)  # never loaded: a cancelled submit, a failed send
    assert _held_by_this_process(inode)
    pool.close()
    pool.unlink()
    del pool
    gc.collect()
    assert _held_by_this_process(inode) == []
    with pytest.raises(ValueError, match="no longer open"):
        pickle.loads(blob)


def test_a_pickle_loads_twice(make_pool):
    pool = make_pool(segment_size=4096, count=2)
    blob = pickle.dumps(pool)
    first, second = pickle.loads(blob), pickle.loads(blob)
    (where,), span = put(first.open_writer(), b"through the first load")
    reader = second.open_reader()
    assert bytes(reader.read_binary(*where)) == b"through the first load"
    reader.end_unit(span, [])
    first.close()
    second.close()


def _write_one(pool) -> tuple:
    (where,), span = put(pool.open_writer(), b"from an executor")
    return where, span


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_submitted_to_a_process_pool_executor_arrives(make_pool, method):
    pool = make_pool(segment_size=4096, count=2)
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        where, span = ex.submit(_write_one, pool).result(timeout=60)
    reader = pool.open_reader()
    assert bytes(reader.read_binary(*where)) == b"from an executor"
    reader.end_unit(span, [])


def test_end_unit_keeps_the_unit_until_every_pinned_anchor_is_released(make_pool):
    pool = make_pool(segment_size=4096, count=1, acquire_timeout=0)
    writer, reader = pool.open_writer(), pool.open_reader()
    (where,), span = put(writer, b"P" * 1000)
    view = reader.read_binary(*where)
    address = np.frombuffer(view, np.uint8).ctypes.data
    # An anchor over the view's address that holds no reference to the view
    # (as a DLPack or ctypes-made tensor can be).
    anchor = np.ctypeslib.as_array((ctypes.c_uint8 * 1000).from_address(address))
    other = np.ones(3)  # a second anchor
    reader.end_unit(span, [anchor, other])
    del view
    gc.collect()
    assert pool.reclaimed == 0
    with pytest.raises(BufferError):
        writer.begin_unit()  # the segment is not handed out under the anchor
    assert bytes(anchor[:4]) == b"PPPP"
    del anchor
    gc.collect()
    assert pool.reclaimed == 0  # one anchor left
    del other
    gc.collect()
    assert pool.reclaimed == 1
    writer.begin_unit()
    writer.abort_unit()


def test_end_unit_refuses_an_anchor_it_cannot_watch(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    _, span = put(writer, b"x")
    with pytest.raises(TypeError, match=r"pinned\[0\].*weakly referenced"):
        reader.end_unit(span, [17])
    assert pool.reclaimed == 1  # the unit itself was ended


def test_reader_zero_copy_is_an_instance_attribute_and_true(make_pool):
    reader = make_pool().open_reader()
    assert reader.zero_copy is True
    assert segpool.Reader.zero_copy is True


def test_arena_desync_error_names_segpool_and_pickles():
    assert segpool.ArenaDesyncError.__module__ == "segpool"
    assert segpool.ArenaDesyncError.__qualname__ == "ArenaDesyncError"
    e = pickle.loads(pickle.dumps(segpool.ArenaDesyncError("out of step")))
    assert type(e) is segpool.ArenaDesyncError and e.args == ("out of step",)
    assert segpool.Writer.__module__ == segpool.Reader.__module__ == "segpool"


def test_prefault_releases_the_gil():
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.02)
    try:
        t0, start = time.monotonic(), ticks
        pool = segpool.SharedMemorySegmentPool(64 << 20, 4, prefault=True)  # 256 MiB
        took, progress = time.monotonic() - t0, ticks - start
    finally:
        stop.set()
        t.join()
    pool.close()
    # With the GIL held throughout, the other thread would get at most one
    # switch interval (5 ms) of work in; free, it runs most of the build.
    assert progress > 2000, f"another thread ran {progress} loops in {took:.3f}s of prefault"


def test_the_pool_can_be_weakly_referenced():
    pool = segpool.SharedMemorySegmentPool(4096, 1)
    ref = weakref.ref(pool)
    assert ref() is pool
    pool.close()
    del pool
    gc.collect()
    assert ref() is None


def test_negative_sizes_and_offsets_raise_value_error_not_overflow_error(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    with pytest.raises(ValueError, match="segment_size must be a non-negative integer"):
        segpool.SharedMemorySegmentPool(-4096, 4)
    writer.begin_unit()
    with pytest.raises(ValueError, match="nbytes must be a non-negative integer, got -5"):
        writer.reserve(-5)
    (where, n) = writer.write_binary(b"abc")
    span = writer.commit_unit()
    with pytest.raises(ValueError, match="nbytes must be a non-negative integer"):
        reader.read_binary(where, -1)
    with pytest.raises(segpool.ArenaDesyncError, match="not one that write_binary"):
        reader.read_binary(-64, n)
    reader.end_unit(span, [])


@pytest.mark.parametrize(
    "geometry, says",
    [
        ((2**63, 2), "overflow the address space"),
        ((2**50, 2), "cannot be mapped|cannot back"),
        ((2**70, 2), "too large"),
        ((4096, 2**64), "too large"),
    ],
)
def test_pool_sizes_no_machine_can_have_raise_value_error(geometry, says):
    with pytest.raises(ValueError, match=says):
        segpool.SharedMemorySegmentPool(*geometry)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: np.zeros((4, 4), np.uint8)[:, 1], id="numpy"),
        pytest.param(lambda: memoryview(b"abcdefgh")[::2], id="memoryview"),
        pytest.param(lambda: np.zeros((4, 4), np.uint8).T, id="fortran-order"),
    ],
)
def test_a_non_contiguous_source_raises_buffer_error_whatever_its_type(make_pool, source):
    writer = make_pool().open_writer()
    writer.begin_unit()
    with pytest.raises(BufferError, match="C-contiguous.*ascontiguousarray"):
        writer.write_binary(source())
    assert writer.unit_len == 0  # nothing was reserved
    writer.abort_unit()


def test_a_writer_shared_by_threads_says_what_to_do(make_pool):
    pool = make_pool(count=1, acquire_timeout=5)
    writer, reader = pool.open_writer(), pool.open_reader()
    _, span = put(writer, b"fills the pool")
    t = threading.Thread(target=writer.begin_unit)  # blocks: the pool is full
    t.start()
    deadline = time.monotonic() + 5
    while pool.stats()["waiting_producers"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    with pytest.raises(RuntimeError, match=r"in use by another thread \(in begin_unit\(\)\).*open_writer"):
        writer.write_binary(b"from a second thread")
    reader.end_unit(span, [])  # let the first thread through
    t.join(5)
    assert writer.unit_len == 0 and "segment 0" in repr(writer)
    writer.abort_unit()


def test_after_close_the_message_blames_close(make_pool):
    pool = make_pool()
    writer = pool.open_writer()
    pool.close()
    with pytest.raises(ValueError, match=r"begin_unit\(\) on a closed pool: close\(\) was called") as e:
        writer.begin_unit()
    assert "shutdown_arena" not in str(e.value)
    with pytest.raises(ValueError, match="close"):
        pool.open_writer()


def test_a_peer_shutdown_names_both_causes(make_pool):
    pool = make_pool()
    clone = pickle.loads(pickle.dumps(pool))
    clone.close()  # another attachment (as another process would) closes
    with pytest.raises(BufferError, match=r"shutdown_arena\(\) or close\(\)"):
        pool.open_writer().begin_unit()
    clone.unlink()


def test_reader_and_writer_reprs_say_what_they_are_doing(make_pool):
    pool = make_pool(segment_size=4096, count=2)
    writer, reader = pool.open_writer(), pool.open_reader()
    geometry = "SharedMemorySegmentPool(segment_size=4096, count=2)"
    assert repr(writer) == f"<segpool.Writer of {geometry}: no unit open>"
    writer.begin_unit()
    (where, _) = writer.write_binary(b"abc")
    assert repr(writer) == f"<segpool.Writer of {geometry}: writing a unit in segment 0, 3 bytes>"
    span = writer.commit_unit()
    assert repr(reader) == f"<segpool.Reader of {geometry}: no unit open>"
    view = reader.read_binary(where, 3)
    assert repr(reader).startswith(f"<segpool.Reader of {geometry}: restoring unit 0x")
    reader.end_unit(span, [])
    assert repr(reader).endswith("no unit open>")
    del view


def test_with_pool_closes_it_at_the_end_of_the_block():
    with segpool.SharedMemorySegmentPool(4096, 2) as pool:
        (where,), span = put(pool.open_writer(), b"inside")
        reader = pool.open_reader()
        view = reader.read_binary(*where)
        reader.end_unit(span, [view])
        assert not pool.closed
    assert pool.closed
    assert bytes(view) == b"inside"  # restored views stay valid
