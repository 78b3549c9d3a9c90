"""segpool.iterate_in_subprocess (issue 16): whole items through the pool,
N workers, order, errors, teardown, the loan call. Run per start method by
CI (``SEGPOOL_START_METHOD``); the ``mp_context`` tests take the default
and one that differs from it (conftest.contexts)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import contexts

import _iter_workers as W
import segpool


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def assert_gone(pids, within=1.0):
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [p for p in pids if alive(p)], "workers left behind"


def equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(equal, a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, memoryview):
        return a.tobytes() == b.tobytes() and a.format == b.format
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("ctx", contexts())
def test_nested_items_equal_and_zero_copy(ctx):
    with segpool.iterate_in_subprocess(W.nested(4), mp_context=ctx) as it:
        got = list(it)
        assert segpool.get_worker_info() is None
        pool = it.pool
        assert all(equal(g, W.make_nested(i)) for i, g in enumerate(got))
        # out-of-band buffers are views of the segment
        base = got[0]["arr"]
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, memoryview)
        assert pool.stats()["held"] == 4
        del got, base
        gc.collect()
        assert pool.stats()["held"] == 0


def test_round_robin_with_unequal_workers_then_unordered():
    with segpool.iterate_in_subprocess(W.Unequal([3, 1, 2]), num_workers=3) as it:
        order = [(w, k) for w, k, _ in it]
        assert order == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]
        # re-iteration: a new pass in the same workers
        pids = it.pids
        assert [(w, k) for w, k, _ in it] == order
        assert it.pids == pids
    with segpool.iterate_in_subprocess(W.Unequal([5, 0, 7]), num_workers=3, ordered=False) as it:
        got = sorted((w, k) for w, k, _ in it)
        assert got == sorted([(0, k) for k in range(5)] + [(2, k) for k in range(7)])


def test_one_worker_keeps_generator_order_and_no_data_crosses_a_pipe():
    with segpool.iterate_in_subprocess(W.Count(1000, 64 << 10), segment_size=1 << 17) as it:
        assert [i for i, _ in it] == list(range(1000))
        # start and nothing else: independent of the 1,000 items of 64 KiB
        assert it.control_bytes < 200, it.control_bytes


def test_worker_exception_names_worker_type_message_traceback():
    it = segpool.iterate_in_subprocess(W.failing, num_workers=2)
    with pytest.raises(RuntimeError) as e:
        list(it)
    msg = str(e.value)
    assert "worker 0" in msg or "worker 1" in msg
    assert "KeyError" in msg and "boom from the worker" in msg
    assert "Traceback" in msg and "_iter_workers.py" in msg
    assert_gone(it.pids)


def test_worker_killed_is_reported_within_a_second_and_segments_come_back():
    it = segpool.iterate_in_subprocess(W.suicide, segment_size=1 << 16)
    pool = it.pool
    t0 = None
    with pytest.raises(RuntimeError) as e:
        for x in it:
            t0 = time.monotonic()
    assert time.monotonic() - t0 < 1.4
    assert "SIGKILL" in str(e.value) and f"pid {it.pids[0]}" in str(e.value)
    assert "worker 0" in str(e.value)
    del pool


def test_parent_killed_takes_workers_with_it(tmp_path):
    for sig in (signal.SIGKILL, signal.SIGTERM):
        script = tmp_path / "parent.py"
        script.write_text(textwrap.dedent(f"""
            import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
            import _iter_workers as W, segpool
            it = segpool.iterate_in_subprocess(W.forever(), num_workers=2, segment_size=1 << 16,
                                               buffer_size=2)
            g = iter(it); next(g)
            print(*it.pids, flush=True)
            import time; time.sleep(60)
        """))
        p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        pids = [int(x) for x in p.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(q) for q in pids)
        p.send_signal(sig)
        p.wait(5)
        assert_gone(pids, within=1.0)


@pytest.mark.parametrize("how", ["break", "del"])
def test_early_exit_stops_workers_blocked_on_a_full_pool(how):
    it = segpool.iterate_in_subprocess(W.forever(), num_workers=2, segment_size=1 << 16)
    held = []
    for x in it:
        held.append(x)
        if len(held) == 12:  # the workers are blocked on the full pool now
            break
    pids = it.pids
    if how == "del":
        del it
        gc.collect()
    t = time.monotonic()
    assert_gone(pids, within=1.0)
    assert time.monotonic() - t < 1.0
    # held items stay valid after teardown
    assert all(h.sum() == 0 and h.size == 8192 for h in held)


def test_oversize_item_raises_value_error_naming_sizes():
    it = segpool.iterate_in_subprocess(W.oversize, segment_size=1 << 16)
    with pytest.raises(ValueError, match=r"segment_size=65536") as e:
        list(it)
    assert "1048" in str(e.value)  # the item's size, about 1 MiB


def test_pool_sized_from_first_item_and_items_valid_after_close():
    it = segpool.iterate_in_subprocess(W.nested(3))
    got = list(it)
    assert it.pool.segment_size >= 65536
    it.close()
    assert all(equal(g, W.make_nested(i)) for i, g in enumerate(got))


def test_initializer_and_worker_info():
    with segpool.iterate_in_subprocess(W.sees_init, initializer=W.init, num_workers=2) as it:
        assert list(it) == [True, True]


def test_timeout():
    it = segpool.iterate_in_subprocess(W.slow, timeout=0.3, segment_size=1 << 16)
    with pytest.raises(TimeoutError):
        list(it)
    import queue

    assert issubclass(segpool.IterationTimeout, queue.Empty)
    assert_gone(it.pids)


def test_loan_array_goes_without_copy():
    with segpool.iterate_in_subprocess(W.loaned_np, segment_size=1 << 17) as it:
        got = list(it)
    assert [float(a[5, 5]) for a in got] == [0.0, 1.0, 2.0]
    assert all(a.shape == (100, 100) and a.dtype == np.float32 for a in got)


def test_torch_tensors_and_loans():
    torch = pytest.importorskip("torch")
    with segpool.iterate_in_subprocess(W.with_torch, mp_context="spawn") as it:
        (x,) = list(it)
    assert torch.equal(x["t"], torch.arange(4096, dtype=torch.float32))
    assert torch.equal(x["b"], torch.ones(3000, dtype=torch.bfloat16))
    with segpool.iterate_in_subprocess(W.loaned, mp_context="spawn", segment_size=1 << 17) as it:
        got = list(it)
    for i, g in enumerate(got):
        assert float(g["a"][0, 0]) == i and float(g["t"][3, 3]) == i + 0.5


def test_loan_outside_a_worker_raises():
    with pytest.raises(RuntimeError):
        segpool.loan_array(10)


def test_reader_recv_blocks_and_answers_ctrl_c(make_pool, ctrl_c):
    pool = make_pool()
    r = pool.open_reader()
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        r.recv(0.2)
    assert 0.19 < time.monotonic() - t < 0.5
    import threading

    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    t = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        r.recv()
    assert time.monotonic() - t < 0.3


def _base(a):
    while isinstance(a, np.ndarray):
        a = a.base
    return a


@pytest.mark.parametrize("ctx", contexts())
def test_bare_arrays_round_trip_zero_copy_and_release_their_segments(ctx):
    """Bare NumPy arrays take the no-pickle path (plain numeric dtypes,
    C-contiguous, at least the threshold) or the pickle path (anything
    else); every one comes back equal, and the large ones are views of the
    segment, which returns when the last view made from it dies."""
    cases = W.array_cases()
    with segpool.iterate_in_subprocess(W.arrays, mp_context=ctx, segment_size=1 << 18) as it:
        got = list(it)
        pool = it.pool
        assert len(got) == len(cases)
        for (label, want), g in zip(cases, got):
            assert type(g) is np.ndarray, label
            assert g.dtype == want.dtype and g.shape == want.shape, label
            assert np.array_equal(g, want), label
            if want.nbytes >= 4096:
                assert isinstance(_base(g), memoryview), label  # a view of the unit
                assert g.flags.writeable and g.flags.c_contiguous, label
        assert not isinstance(_base(got[10]), memoryview)  # "small": a copy
        held = pool.stats()["held"]
        assert held == sum(a.nbytes >= 4096 for _, a in cases)
        # A slice outliving its array keeps the segment; its death frees it.
        piece = got[0][100:200]
        del got
        gc.collect()
        assert pool.stats()["held"] == 1
        assert piece.sum() == 700
        del piece
        gc.collect()
        assert pool.stats()["held"] == 0


def test_memoryviews_in_band_and_out_of_band():
    with segpool.iterate_in_subprocess(W.views, segment_size=1 << 16) as it:
        tiny, shaped, strided = list(it)
    assert tiny.tobytes() == b"tiny"
    assert shaped.format == "i" and shaped.shape == (32, 64)
    assert shaped.tolist() == np.arange(2048, dtype=np.int32).reshape(32, 64).tolist()
    assert strided.tobytes() == np.arange(5000, dtype=np.uint8)[::2].tobytes()


def test_item_reader_and_writer_directly(make_pool):
    pool = make_pool()
    native = pool._pool
    r = segpool._segpool.ItemReader(native)
    with pytest.raises(TimeoutError):
        r.recv(0.05)
    w = segpool._segpool.ItemWriter(native)
    a = np.arange(4096, dtype=np.float64)
    assert w.put_array((6, 1, 2, 3), a, 4096) == 0
    kind, wid, pass_no, seq, env, bufs = r.recv(1.0)
    assert (kind, wid, pass_no, seq) == (6, 1, 2, 3)
    assert env[0] == ord("d") and len(bufs) == 1
    assert np.array_equal(np.frombuffer(bufs[0], np.float64), a)
    assert pool.stats()["held"] == 1
    del bufs
    gc.collect()
    assert pool.stats()["held"] == 0
    # Not eligible for the bare-array path: nothing written, None.
    assert w.put_array((6, 0, 0, 0), a[::2], 1) is None
    assert w.put_array((6, 0, 0, 0), a, 1 << 20) is None
    # Too large for a segment: the bytes it needs, nothing written.
    need = w.put((1, 0, 0, 0), b"env", [bytes(pool.segment_size)])
    assert need > pool.segment_size
    assert pool.stats()["queued"] == 0
    # A unit from another kind of writer: kind 0.
    wr = pool.open_writer()
    wr.begin_unit()
    wr.write_binary(b"not an item")
    wr.commit_unit()
    assert r.recv(1.0)[0] == 0


def test_extension_codes_shorten_envelopes_and_yield_to_a_prior_claim():
    """The rebuilders travel as copyreg extension codes; a process that had
    one of those codes registered for something else keeps it, and the
    items still come back equal (the names then go in full)."""
    import copyreg
    import pickle

    from segpool import _iterate as I

    code = I._EXT_BASE + 1
    assert I._ext_codes(True)
    assert pickle.dumps(I._nd, 5).count(b"\x84") == 1  # EXT4, no module name
    assert b"_iterate" not in pickle.dumps(I._nd, 5)
    I._ext_codes(False)
    assert b"_iterate" in pickle.dumps(I._nd, 5)
    copyreg.add_extension("builtins", "len", code)
    try:
        assert not I._ext_codes(True)
        assert copyreg._extension_registry[("builtins", "len")] == code
        with segpool.iterate_in_subprocess(W.nested(2)) as it:
            got = list(it)
        assert all(equal(g, W.make_nested(i)) for i, g in enumerate(got))
    finally:
        copyreg.remove_extension("builtins", "len", code)
    assert I._ext_codes(True)
