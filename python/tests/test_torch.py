"""Torch tensors through the pool, zero-copy, under every start method.

CI installs torch (PyPI's build, run on the CPU) in one interpreter's
environment, where none of these tests skips; elsewhere the module skips.

The OpenMP-and-fork trap: a parent whose torch has started its intra-op
thread pool (OpenMP) hangs the first parallel torch op of a child it
``fork``s, with or without any arena, because the child inherits the pool's
state but none of its threads. The remedy is ``torch.set_num_threads(1)``
in the parent before the fork, or the ``spawn``/``forkserver`` start
methods. This module sets one thread at import, before any test forks.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing

import _workers
import numpy as np
import pytest
from conftest import contexts, put, require_spdl, require_torch

torch = require_torch()
torch.set_num_threads(1)  # before any fork: see the module's docstring
require_spdl()
from spdl.pipeline import iterate_in_subprocess  # noqa: E402
from spdl.pipeline._arena._offload import _offload, _restore  # noqa: E402
from spdl.pipeline._arena._registry import _default_registry  # noqa: E402

import segpool  # noqa: E402

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.int64, torch.uint8, torch.bool]


def sample(dtype, shape=(64, 96)):  # 6144 elements: above SPDL's 4 KiB offload threshold
    t = torch.arange(int(np.prod(shape))).reshape(shape) % 7
    return t.to(dtype)


def roundtrip(pool, obj):
    writer, reader = pool.open_writer(), pool.open_reader()
    return _restore(_offload(obj, writer, _default_registry()), reader, _default_registry())


def segment_range(pool, index: int) -> tuple[int, int]:
    seg = np.frombuffer(pool._segment(index), np.uint8)
    return seg.ctypes.data, seg.ctypes.data + seg.nbytes


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_common_dtype_round_trips_zero_copy_through_the_pool(make_pool, dtype):
    pool = make_pool(segment_size=1 << 16, count=2)
    sent = sample(dtype)
    writer, reader = pool.open_writer(), pool.open_reader()
    writer.begin_unit()
    # Bytes of any dtype (bfloat16 has no NumPy twin: go through uint8).
    where = writer.write_binary(sent.view(torch.uint8).numpy())
    span = writer.commit_unit()
    got = torch.frombuffer(reader.read_binary(*where), dtype=dtype).reshape(sent.shape)
    reader.end_unit(span, [got])
    assert got.dtype == dtype and torch.equal(got, sent)
    lo, hi = segment_range(pool, 0)
    assert lo <= got.data_ptr() < hi  # the segment itself, not a copy
    pool._segment(0)[: got.element_size()] = bytes(got.element_size())
    assert got.view(-1)[0].item() == 0
    del got
    gc.collect()
    assert pool.reclaimed == 1


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d is not torch.bfloat16], ids=str)
def test_every_dtype_numpy_can_hold_restores_through_spdls_offload(make_pool, dtype):
    pool = make_pool(segment_size=1 << 16, count=2)
    sent = sample(dtype)
    got = roundtrip(pool, {"t": sent})["t"]
    assert got.dtype == dtype and torch.equal(got, sent)
    lo, hi = segment_range(pool, 0)
    assert lo <= got.data_ptr() < hi


def test_spdls_torch_handler_refuses_bfloat16_and_leaves_the_pool_clean(make_pool):
    # SPDL 0.8.0 exposes a tensor through tensor.numpy(), which has no
    # bfloat16: the offload raises, the unit is aborted, nothing leaks.
    # (segpool itself carries bfloat16: see the test above.)
    pool = make_pool(segment_size=1 << 16, count=2)
    with pytest.raises(TypeError, match="BFloat16"):
        roundtrip(pool, {"t": sample(torch.bfloat16)})
    assert pool.published == 0 and pool.stats()["writing"] == 0


def test_a_non_contiguous_tensor_round_trips(make_pool):
    pool = make_pool(segment_size=1 << 16, count=2)
    base = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64)
    for sent in (base[:, ::2], base.T, base[5:60, 3:47]):  # each above 4 KiB
        assert not sent.is_contiguous()
        got = roundtrip(pool, {"t": sent})["t"]
        assert torch.equal(got, sent) and got.is_contiguous()
    writer = pool.open_writer()
    writer.begin_unit()
    with pytest.raises(BufferError, match="C-contiguous"):
        writer.write_binary(base.T.numpy())  # the raw call refuses, clearly
    writer.abort_unit()


def test_slices_and_views_hold_the_segment(make_pool):
    pool = make_pool(segment_size=1 << 16, count=2)
    got = roundtrip(pool, {"t": sample(torch.float32, (64, 64))})["t"]
    keep = [got[10:20], got[:, 3], got.view(-1), got.view(torch.int32), got.T, got[::2, ::3]]
    del got
    gc.collect()
    while keep:
        assert pool.reclaimed == 0, f"reclaimed with {len(keep)} views alive"
        keep.pop()
        gc.collect()
    assert pool.reclaimed == 1


def test_in_place_writes_are_visible_through_every_alias(make_pool):
    pool = make_pool(segment_size=1 << 16, count=2)
    t = roundtrip(pool, {"t": torch.zeros(32, 32, dtype=torch.int64)})["t"]  # 8 KiB
    row, flat, arr, as_bytes = t[2], t.view(-1), t.numpy(), t.view(torch.uint8)
    start = (t.data_ptr() - segment_range(pool, 0)[0]) // 8
    seg = np.frombuffer(pool._segment(0), np.int64)[start : start + 32 * 32]
    t[2, 3] = 42
    assert row[3] == 42 and flat[67] == 42 and arr[2, 3] == 42 and seg[67] == 42
    arr[31, 31] = -1
    assert t[31, 31] == -1 and flat[-1] == -1 and seg[-1] == -1
    seg[0] = 7
    assert t[0, 0] == 7 and arr[0, 0] == 7
    as_bytes[0, 8] = 1  # the low byte of t[0, 1]
    assert t[0, 1] == 1 and seg[1] == 1
    row.add_(1)
    assert int(t[2].sum()) == 42 + 32


def test_from_numpy_and_back_shares_the_segment(make_pool):
    pool = make_pool(segment_size=1 << 16, count=2)
    got = roundtrip(pool, {"t": sample(torch.float32), "a": np.ones(4096, np.float32)})
    t, a = got.pop("t"), got.pop("a")
    back = torch.from_numpy(t.numpy())  # tensor -> array -> tensor
    from_array = torch.from_numpy(a)  # a restored array -> tensor
    assert back.data_ptr() == t.data_ptr()
    assert from_array.data_ptr() == a.ctypes.data
    lo, hi = segment_range(pool, 0)
    assert lo <= back.data_ptr() < hi and lo <= from_array.data_ptr() < hi
    del got, t, a
    gc.collect()
    assert pool.reclaimed == 0  # the tensors made by from_numpy hold it
    del back, from_array
    gc.collect()
    assert pool.reclaimed == 1


@pytest.mark.parametrize("ctx", contexts(), ids=lambda c: c or "default")
def test_tensors_through_iterate_in_subprocess(ctx):
    pool = segpool.SharedMemorySegmentPool(1 << 20, 4)
    src = iterate_in_subprocess(
        functools.partial(_workers.torch_items, 6), arena=pool, mp_context=ctx, timeout=120
    )
    n = 0
    for i, got in enumerate(src):
        _workers.torch_check(got, i)
        inside = [
            any(lo <= t.data_ptr() < hi for lo, hi in map(lambda s: segment_range(pool, s), range(4)))
            for t in (got["image"], got["labels"], got["mask"], got["pixels"])
        ]
        assert all(inside), "a restored tensor is not a view of a segment"
        n += 1
    assert n == 6
    del got
    gc.collect()
    assert (pool.published, pool.reclaimed) == (6, 6)


def _torch_op_in_child(q) -> None:
    q.put(float(torch.ones(256, 256).matmul(torch.ones(256, 256)).sum()))


def test_a_forked_child_runs_torch_after_the_parent_did_with_one_thread():
    # The remedy the docs give for the OpenMP trap, exercised: the parent
    # ran a parallel-capable op, with one intra-op thread, then forks.
    assert torch.get_num_threads() == 1
    torch.ones(512, 512).matmul(torch.ones(512, 512))
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_torch_op_in_child, args=(q,))
    p.start()
    assert q.get(timeout=60) == 256.0**3
    p.join(30)
    assert p.exitcode == 0


def test_a_unit_written_by_hand_restores_as_a_tensor(make_pool):
    pool = make_pool(segment_size=1 << 16, count=1)
    (where,), span = put(pool.open_writer(), np.arange(16, dtype=np.float32).tobytes())
    reader = pool.open_reader()
    t = torch.frombuffer(reader.read_binary(*where), dtype=torch.float32)
    reader.end_unit(span, [t])
    assert torch.equal(t, torch.arange(16, dtype=torch.float32))
