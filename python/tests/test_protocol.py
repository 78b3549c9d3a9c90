"""SPDL's arena protocol, as segpool.SharedMemorySegmentPool keeps it."""

from __future__ import annotations

import copy
import gc
import threading
import time
import types

import numpy as np
import pytest
from conftest import put, require_spdl

import segpool


@pytest.fixture
def arena():
    """SPDL's own offload and restore (the tests that use it skip without it)."""
    require_spdl()
    from spdl.pipeline._arena._offload import _discard, _offload, _restore
    from spdl.pipeline._arena._registry import _default_registry

    return types.SimpleNamespace(
        offload=_offload, restore=_restore, discard=_discard, registry=_default_registry
    )


def test_a_unit_round_trips(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    writer.begin_unit()
    a = writer.write_binary(b"first binary")
    b = writer.write_binary(bytes(range(200)))
    assert writer.unit_len == 264  # 12 bytes, padding to 64, then 200
    span = writer.commit_unit()
    # Offsets and span are opaque tokens that name the unit; the sizes are
    # plain, and offsets keep the alignment of the place they name.
    assert a[1] == 12 and b[1] == 200 and a[0] % 64 == 0 and b[0] % 64 == 0
    assert 0 <= span < 2**64  # SPDL packs the span as an unsigned 64-bit int
    assert bytes(reader.read_binary(*a)) == b"first binary"
    assert bytes(reader.read_binary(*b)) == bytes(range(200))
    reader.end_unit(span, [])
    assert (pool.published, pool.reclaimed) == (1, 1)


def test_units_rotate_across_segments_while_held(make_pool):
    pool = make_pool(segment_size=4096, count=3)
    writer, reader = pool.open_writer(), pool.open_reader()
    views = []
    for i in range(3):
        (where,), span = put(writer, bytes([i + 1]) * 100)
        views.append(reader.read_binary(*where))
        reader.end_unit(span, [])
    # Each held unit sits in its own segment.
    homes = [[s for s in range(3) if bytes(pool._segment(s)[:100]) == bytes(v)] for v in views]
    assert sorted(h[0] for h in homes) == [0, 1, 2] and all(len(h) == 1 for h in homes)
    del views
    for i in range(6):  # and the pool keeps turning once they are released
        (where,), span = put(writer, b"again")
        assert bytes(reader.read_binary(*where)) == b"again"
        reader.end_unit(span, [])
    assert (pool.published, pool.reclaimed) == (9, 9)


def test_binaries_start_64_byte_aligned(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    sizes = [1, 3, 100, 64, 65, 7]
    placements, span = put(writer, *[b"z" * n for n in sizes])
    offsets = [o for o, _ in placements]
    assert all(o % 64 == 0 for o in offsets), offsets
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for (offset, n), size in zip(placements, sizes):
        assert n == size
        arr = np.frombuffer(reader.read_binary(offset, n), dtype=np.uint8)
        assert arr.ctypes.data % 64 == 0
    reader.end_unit(span, [])


def test_a_view_outlives_close_and_unlink(make_pool):
    pool = make_pool()
    writer, reader = pool.open_writer(), pool.open_reader()
    (where,), span = put(writer, b"still here" * 1000)
    view = reader.read_binary(*where)
    arr = np.frombuffer(reader.read_binary(*where), dtype=np.uint8)
    reader.end_unit(span, [view])
    pool.close()
    pool.unlink()
    pool.unlink()  # idempotent
    assert bytes(view) == b"still here" * 1000
    assert bytes(arr[:10]) == b"still here"
    with pytest.raises(ValueError, match="closed"):
        pool.published  # noqa: B018


def test_mode_a_raises_at_once_when_full(make_pool):
    pool = make_pool(count=1, acquire_timeout=0)
    writer, reader = pool.open_writer(), pool.open_reader()
    (where,), span = put(writer, b"held")
    view = reader.read_binary(*where)
    reader.end_unit(span, [view])
    t0 = time.monotonic()
    with pytest.raises(BufferError, match="acquire_timeout=0"):
        writer.begin_unit()
    assert time.monotonic() - t0 < 0.05
    del view
    writer.begin_unit()  # free again
    writer.abort_unit()


@pytest.mark.parametrize("release", ["end_unit", "last view"])
def test_begin_unit_blocks_until_a_real_release(make_pool, release):
    pool = make_pool(count=1, acquire_timeout=10)
    writer, reader = pool.open_writer(), pool.open_reader()
    (where,), span = put(writer, b"only segment")
    held = []
    if release == "last view":
        held.append(reader.read_binary(*where))
        reader.end_unit(span, held)  # ends the unit, but the view holds it

    def release_later():
        time.sleep(0.3)
        if release == "end_unit":
            reader.end_unit(span, [])
        else:
            held.clear()

    t = threading.Thread(target=release_later)
    t0 = time.monotonic()
    t.start()
    writer.begin_unit()
    waited = time.monotonic() - t0
    t.join()
    writer.abort_unit()
    assert 0.28 <= waited < 1.0, f"begin_unit returned after {waited:.3f}s, release was at 0.3s"
    assert pool.reclaimed == 1


def test_begin_unit_times_out(make_pool):
    pool = make_pool(count=1, acquire_timeout=0.3)
    writer = pool.open_writer()
    put(writer, b"never received")
    t0 = time.monotonic()
    with pytest.raises(BufferError, match=r"after waiting 0\.3s"):
        writer.begin_unit()
    assert 0.28 <= time.monotonic() - t0 < 1.0


def test_shutdown_arena_wakes_a_blocked_producer(make_pool):
    pool = make_pool(count=1, acquire_timeout=30)
    writer = pool.open_writer()
    put(writer, b"fills the pool")
    threading.Timer(0.2, pool.shutdown_arena).start()
    t0 = time.monotonic()
    with pytest.raises(BufferError, match="shut down"):
        writer.begin_unit()
    assert time.monotonic() - t0 < 1.0
    assert pool.stats()["shutdown"] is True
    with pytest.raises(BufferError, match="shut down"):
        writer.begin_unit()  # sticky
    pool.shutdown_arena()  # and safe to repeat


def test_a_unit_larger_than_a_segment_is_refused_not_truncated(make_pool, arena):
    pool = make_pool(segment_size=4096, count=2)
    writer, reader = pool.open_writer(), pool.open_reader()
    writer.begin_unit()
    with pytest.raises(BufferError, match="segment_size"):
        writer.write_binary(b"x" * 5000)
    # The unit is still open and unharmed: what fits still goes in.
    first = writer.write_binary(b"a" * 4000)
    with pytest.raises(BufferError, match="Increase SharedMemorySegmentPool segment_size"):
        writer.write_binary(b"b" * 100)  # 4032 + 100 > 4096
    assert writer.unit_len == 4000
    span = writer.commit_unit()
    assert bytes(reader.read_binary(*first)) == b"a" * 4000
    reader.end_unit(span, [])
    # Through SPDL's _offload: the unit is aborted, nothing is published.
    with pytest.raises(BufferError):
        arena.offload({"big": np.zeros(5000, np.uint8)}, writer, arena.registry())
    assert pool.published == 1 and pool.stats()["writing"] == 0


def test_nested_objects_round_trip_through_offload_and_restore(make_pool, arena):
    pool = make_pool(segment_size=1 << 20)
    writer, reader, registry = pool.open_writer(), pool.open_reader(), arena.registry()
    obj = {
        "image": np.arange(3 * 64 * 64, dtype=np.float32).reshape(3, 64, 64),
        "labels": [np.arange(2048, dtype=np.int16), {"deep": (b"q" * 8192, 17)}],
        "small": np.arange(4),  # below the offload threshold: pickled inline
        "name": "sample-7",
    }
    got = arena.restore(arena.offload(obj, writer, registry), reader, registry)
    assert np.array_equal(got["image"], obj["image"]) and got["image"].shape == (3, 64, 64)
    assert np.array_equal(got["labels"][0], obj["labels"][0])
    assert bytes(got["labels"][1]["deep"][0]) == b"q" * 8192
    assert got["labels"][1]["deep"][1] == 17 and got["name"] == "sample-7"
    assert np.array_equal(got["small"], np.arange(4))
    assert not got["image"].flags.owndata
    del got
    assert pool.reclaimed == pool.published == 1


def test_numpy_restore_is_zero_copy(make_pool, arena):
    pool = make_pool(segment_size=1 << 16, count=4)
    writer, reader, registry = pool.open_writer(), pool.open_reader(), arena.registry()
    got = arena.restore(arena.offload({"a": np.zeros(8192, np.uint8)}, writer, registry), reader, registry)
    arr = got["a"]
    # A fresh pool puts the first unit in segment 0, the binary at offset 0.
    seg = pool._segment(0)
    seg[0] = 42
    seg[8191] = 7
    assert arr[0] == 42 and arr[8191] == 7
    arr[1] = 99  # and the restored array is writable, in place
    assert seg[1] == 99


def test_reclaimed_moves_only_after_every_view_is_gone(make_pool, arena):
    pool = make_pool(segment_size=1 << 16, count=2)
    writer, reader, registry = pool.open_writer(), pool.open_reader(), arena.registry()
    got = arena.restore(
        arena.offload({"a": np.arange(4096, dtype=np.int32), "b": b"m" * 8192}, writer, registry),
        reader,
        registry,
    )
    arr, mv = got.pop("a"), got.pop("b")
    keep = [arr[100:200], arr.view(), copy.copy(arr[::2]), mv[10:20], memoryview(mv)]
    del got, arr, mv
    gc.collect()
    while keep:
        assert pool.reclaimed == 0, f"reclaimed with {len(keep)} views alive"
        keep.pop()
    assert pool.reclaimed == 1


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_restore_as_memoryviews(make_pool, arena, kind):
    pool = make_pool()
    writer, reader, registry = pool.open_writer(), pool.open_reader(), arena.registry()
    payload = kind(bytes(range(256)) * 32)
    got = arena.restore(arena.offload({"p": payload}, writer, registry), reader, registry)["p"]
    assert isinstance(got, memoryview)
    assert bytes(got) == bytes(payload)
    assert not got.readonly


def test_discard_accounts_for_an_unread_envelope(make_pool, arena):
    pool = make_pool(count=3)
    writer, reader, registry = pool.open_writer(), pool.open_reader(), arena.registry()
    blobs = [arena.offload({"i": i, "p": b"d" * 5000}, writer, registry) for i in range(2)]
    empty = arena.offload({"tiny": 1}, writer, registry)  # a unit with no binaries
    assert pool.stats()["queued"] == 3
    arena.discard(blobs[0], reader)
    got = arena.restore(blobs[1], reader, registry)
    assert bytes(got["p"]) == b"d" * 5000
    assert arena.restore(empty, reader, registry) == {"tiny": 1}
    del got
    assert pool.reclaimed == pool.published == 3


def test_invalid_configurations_raise_value_error():
    with pytest.raises(ValueError, match="segment_size must be positive"):
        segpool.SharedMemorySegmentPool(0, 4)
    with pytest.raises(ValueError, match="count must be a non-negative integer, got -1"):
        segpool.SharedMemorySegmentPool(4096, -1)
    with pytest.raises(ValueError, match="acquire_timeout"):
        segpool.SharedMemorySegmentPool(4096, 4, acquire_timeout=-1)
    with pytest.raises(TypeError):
        segpool.SharedMemorySegmentPool("4096", 4)
