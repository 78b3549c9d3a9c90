"""``segpool.iterate_in_subprocess``: whole items through the pool.

Each worker pickles an item with protocol 5; its large binaries (NumPy
arrays, torch CPU tensors, ``bytes``/``bytearray``/``memoryview`` of at
least ``oob_threshold`` bytes) go out of band, copied once into the unit's
segment, and the small remaining envelope goes into the same unit. Unit
layout::

    offset 0   header (64 bytes): magic, kind, worker, pass, seq,
               envelope offset/length, buffer table offset, buffer count
    ...        the out-of-band buffers, each 64-byte aligned
    ...        the envelope (the pickle)
    ...        the buffer table: (offset, length) per buffer, uint64

The parent receives units with a blocking ``Reader.recv`` (spin, then a
futex sleep, GIL released) and rebuilds each item over views of the unit:
the segment returns to the pool when the last of them is collected. Only
control messages cross the pipes (start a pass, stop, the pool when it is
sized from the first item); ends of passes and errors travel as units.
"""

from __future__ import annotations

import collections
import ctypes
import io
import multiprocessing
import os
import pickle
import queue
import select
import signal
import struct
import sys
import threading
import time
import traceback
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import connection, util
from typing import Any

_MAGIC = b"SPI1"
# magic, kind, worker, pass, seq, envelope offset, envelope length,
# table offset, buffer count
_HEADER = struct.Struct("<4sIIIQQQQQ")
_HEADER_SIZE = 64
_MASK = (1 << 63) - 1  # an offset token's offset in the unit
_ITEM, _END, _ERROR, _OVERSIZE = 1, 2, 3, 4
_POLL = 0.1  # how often a waiting parent looks at its workers (s)


def _align(n: int) -> int:
    return (n + 63) & ~63


@dataclass(frozen=True)
class WorkerInfo:
    """What :py:func:`get_worker_info` returns in a worker process."""

    id: int
    """This worker's index, ``0 .. num_workers - 1``."""
    num_workers: int
    """How many workers the iterable runs."""
    pid: int
    """This worker's process id."""


_WORKER: _Worker | None = None
_INFO: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """``None`` in the parent; in a worker of :py:func:`iterate_in_subprocess`,
    its :py:class:`WorkerInfo` (``id``, ``num_workers``, ``pid``), like
    ``torch.utils.data.get_worker_info()``: ``fn`` uses it to shard."""
    return _INFO


class IterationTimeout(TimeoutError, queue.Empty):
    """No item came within ``timeout`` seconds. Both :py:exc:`TimeoutError`
    and :py:exc:`queue.Empty` (what SPDL's iterator raises)."""


# -- the worker ---------------------------------------------------------------


class _Shutdown(Exception):
    """The parent tore the iterable down: leave quietly."""


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, worker: _Worker) -> None:
        super().__init__(file, protocol=5)
        self.w = worker
        self.bufs: list[Any] = []
        self.handlers: dict[type, Callable[[Any], Any]] = {
            bytes: self._bytes,
            bytearray: self._bytes,
            memoryview: self._memoryview,
        }
        np = sys.modules.get("numpy")
        if np is not None:
            self.handlers[np.ndarray] = self._ndarray
        torch = sys.modules.get("torch")
        if torch is not None:
            self.handlers[torch.Tensor] = self._tensor
        self.torch: Any = torch

    def persistent_id(self, obj: Any) -> Any:  # noqa: D102
        h = self.handlers.get(type(obj))
        return None if h is None else h(obj)

    def _add(self, buf: Any) -> int:
        self.bufs.append(buf)
        return len(self.bufs) - 1

    def _bytes(self, obj: bytes | bytearray) -> Any:
        if len(obj) < self.w.threshold:
            return None
        return ("B" if type(obj) is bytes else "A", self._add(obj))

    def _memoryview(self, obj: memoryview) -> Any:
        if obj.nbytes < self.w.threshold or not obj.c_contiguous:
            return None
        return ("M", self._add(obj.cast("B") if obj.ndim != 1 or obj.format != "B" else obj),
                obj.format, obj.shape)

    def _ndarray(self, a: Any) -> Any:
        if a.nbytes < self.w.threshold or a.dtype.hasobject:
            return None
        dtype = a.dtype.str if a.dtype.names is None and a.dtype.subdtype is None else a.dtype
        loan = self.w.loans.get(a.__array_interface__["data"][0])
        if loan is not None and loan[1] == a.nbytes and a.flags.c_contiguous:
            return ("L", loan[0], loan[1], dtype, a.shape)
        if not a.flags.c_contiguous:
            a = a.copy()
        return ("N", self._add(a), dtype, a.shape)

    def _tensor(self, t: Any) -> Any:
        if t.device.type != "cpu" or t.layout is not self.torch.strided or t.is_sparse:
            return None
        nbytes = t.numel() * t.element_size()
        if nbytes < self.w.threshold:
            return None
        grad = t.requires_grad
        t = t.detach()
        loan = self.w.loans.get(t.data_ptr())
        if loan is not None and loan[1] == nbytes and t.is_contiguous():
            return ("l", loan[0], loan[1], t.dtype, tuple(t.shape), grad)
        flat = t.contiguous().reshape(-1).view(self.torch.uint8).numpy()
        return ("T", self._add(flat), t.dtype, tuple(t.shape), grad)


class _Worker:
    def __init__(self, wid: int, n: int, pool: Any, ctrl: Any, slot: Any,
                 threshold: int) -> None:
        self.wid, self.n, self.pool, self.ctrl, self.slot = wid, n, pool, ctrl, slot
        self.threshold = threshold
        self.writer: Any = pool.open_writer() if pool is not None else None
        self.header: memoryview | None = None  # the open unit's header loan
        self.loans: dict[int, tuple[int, int]] = {}  # address -> (offset, nbytes)
        self.pass_no = 0
        self.seq = 0
        self.torch = sys.modules.get("torch")

    # The pool, when the parent sizes it from the first item.
    def _need_pool(self, size: int) -> None:
        if self.pool is not None:
            return
        if not self.ctrl.poll():
            self.ctrl.send(("size", size))
        msg = self.ctrl.recv()
        if msg[0] != "pool":
            raise _Shutdown
        self.pool = msg[1]
        self.writer = self.pool.open_writer()

    def _begin(self, counted: bool) -> None:
        """Opens a unit (a slot of ``buffer_size`` first, for an item)."""
        if self.header is not None:
            return
        if counted:
            self.slot.acquire()
        try:
            self.writer.begin_unit()
        except BufferError:
            if self.pool.stats()["shutdown"]:
                raise _Shutdown from None
            raise
        self.header = self.writer.reserve(_HEADER_SIZE)[1]

    def _commit(self, kind: int, bufs: list[Any], env: bytes | memoryview) -> None:
        w = self.writer
        table = array("Q")
        for b in bufs:
            off, n = w.write_binary(b)
            table.append(off & _MASK)
            table.append(n)
        env_off, env_len = w.write_binary(env)
        tab_off = w.write_binary(table)[0] & _MASK if bufs else 0
        assert self.header is not None
        _HEADER.pack_into(self.header, 0, _MAGIC, kind, self.wid, self.pass_no, self.seq,
                          env_off & _MASK, env_len, tab_off, len(bufs))
        self.header.release()
        self.header = None
        w.commit_unit(lent=bool(self.loans))
        self.loans.clear()
        self.seq += 1

    def put(self, kind: int, obj: Any) -> None:
        f = io.BytesIO()
        p = _Pickler(f, self)
        p.dump(obj)
        env = f.getbuffer()
        bufs = p.bufs
        size = (_HEADER_SIZE + sum(_align(memoryview(b).nbytes) for b in bufs)
                + _align(len(env)) + 16 * len(bufs))
        if self.pool is None:
            self._need_pool(size)
        if size + 64 > self.pool.segment_size and kind == _ITEM:
            if self.header is not None:
                self.writer.abort_unit()
                self.header = None
                self.loans.clear()
                self.slot.release()
            raise _Oversize(size, self.pool.segment_size)
        self._begin(kind == _ITEM)
        self._commit(kind, bufs, env)

    def loan(self, nbytes: int) -> tuple[int, memoryview]:
        if self.pool is None:
            self._need_pool(_HEADER_SIZE + _align(nbytes) + 4096)
        self._begin(True)
        off, view = self.writer.reserve(nbytes)
        return off & _MASK, view

    def run_pass(self, fn: Callable[[], Iterable[Any]], init_error: BaseException | None) -> None:
        self.seq = 0
        try:
            if init_error is not None:
                raise init_error
            for item in fn():
                self.put(_ITEM, item)
                del item
            self.put(_END, None)
        except _Shutdown:
            raise
        except _Oversize as e:
            self.put(_OVERSIZE, str(e))
        except BaseException as e:
            if isinstance(e, BufferError) and self.pool is not None and \
                    self.pool.stats()["shutdown"]:
                raise _Shutdown from None
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self.put(_ERROR, (type(e).__qualname__, str(e), tb))


class _Oversize(Exception):
    def __init__(self, size: int, segment_size: int) -> None:
        super().__init__(
            f"an item of {size} bytes (its out-of-band buffers, envelope and header) does not "
            f"fit a segment: segment_size={segment_size}. Pass a larger segment_size= (or an "
            f"arena with larger segments) to iterate_in_subprocess")


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the process that started us dies (PR_SET_PDEATHSIG), and
    exit now if it already did."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        # A forkserver's child: PDEATHSIG follows the forkserver, so a thread
        # sleeps on a pidfd of the process that started us and kills this
        # one when it exits (or exits now if it is gone already).
        try:
            fd = os.pidfd_open(parent)
        except (ProcessLookupError, OSError):
            os._exit(1)

        def watch() -> None:
            select.select([fd], [], [])
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="segpool-parent-watch", daemon=True).start()


def _worker_main(wid: int, n: int, parent: int, fn: Callable[[], Iterable[Any]],
                 initializer: Callable[[], Any] | None, pool: Any, ctrl: Any, slot: Any,
                 threshold: int) -> None:
    global _WORKER, _INFO
    _die_with_parent(parent)
    _INFO = WorkerInfo(wid, n, os.getpid())
    init_error: BaseException | None = None
    if initializer is not None:
        try:
            initializer()
        except BaseException as e:  # reported at the first pass
            init_error = e
    worker = _Worker(wid, n, pool, ctrl, slot, threshold)
    _WORKER = worker
    try:
        while True:
            try:
                msg = ctrl.recv()
            except EOFError:
                return
            if msg[0] == "start":
                worker.pass_no = msg[1]
                worker.run_pass(fn, init_error)
            elif msg[0] == "pool":
                worker.pool = msg[1]
                worker.writer = worker.pool.open_writer()
            else:
                return
    except _Shutdown:
        return


def loan_array(shape: int | tuple[int, ...], dtype: Any = "uint8") -> Any:  # numpy.ndarray
    """In a worker of :py:func:`iterate_in_subprocess`: a NumPy array of
    ``shape`` and ``dtype`` allocated inside the unit of the next item this
    worker yields, to fill in place (decode straight into it). Yield it in
    that item (anywhere in it) and it travels with no copy at all: the
    parent gets a view of the very bytes written. Once yielded, the array
    belongs to the parent: do not write it any more. Several loans may go
    into one item; loans the item does not contain still take their room.
    Outside a worker, :py:exc:`RuntimeError`."""
    import numpy as np

    if _WORKER is None:
        raise RuntimeError("loan_array() is for iterate_in_subprocess's workers (fn runs there)")
    dt = np.dtype(dtype)
    shp = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shp, dtype=np.int64)) * dt.itemsize
    off, view = _WORKER.loan(nbytes)
    a = np.frombuffer(view, dtype=dt).reshape(shp)
    _WORKER.loans[a.__array_interface__["data"][0]] = (off, nbytes)
    return a


def loan_tensor(shape: int | tuple[int, ...], dtype: Any = None) -> Any:
    """:py:func:`loan_array`'s torch counterpart: a CPU tensor (``dtype`` a
    ``torch.dtype``, default ``torch.float32``) allocated inside the next
    unit."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    shp = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = 1
    for d in shp:
        nbytes *= d
    nbytes *= torch.empty((), dtype=dtype).element_size()
    raw = loan_array(nbytes, "uint8")
    t = torch.from_numpy(raw).view(dtype).reshape(shp)
    return t


# -- the parent ---------------------------------------------------------------


def _rebuild(view: memoryview, header: tuple[Any, ...]) -> tuple[int, int, Any]:
    """(kind, worker, object) of the unit ``view``."""
    _, kind, wid, _, _, env_off, env_len, tab_off, nbuf = header
    if nbuf:
        tab = view[tab_off:tab_off + 16 * nbuf].cast("Q")
        bufs = [view[tab[2 * i]:tab[2 * i] + tab[2 * i + 1]] for i in range(nbuf)]
    else:
        bufs = []
    env = view[env_off:env_off + env_len]
    return kind, wid, _Unpickler(io.BytesIO(env), bufs, view).load()


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, bufs: list[memoryview], view: memoryview) -> None:
        super().__init__(f)
        self.bufs = bufs
        self.view = view

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        k = pid[0]
        if k == "N":
            import numpy as np

            return np.frombuffer(self.bufs[pid[1]], dtype=pid[2]).reshape(pid[3])
        if k == "L":
            import numpy as np

            return np.frombuffer(self.view[pid[1]:pid[1] + pid[2]], dtype=pid[3]).reshape(pid[4])
        if k in ("T", "l"):
            import torch

            if k == "T":
                buf, dtype, shape, grad = self.bufs[pid[1]], pid[2], pid[3], pid[4]
            else:
                buf = self.view[pid[1]:pid[1] + pid[2]]
                dtype, shape, grad = pid[3], pid[4], pid[5]
            t = torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape)
            return t.requires_grad_() if grad else t
        if k == "B":
            return bytes(self.bufs[pid[1]])
        if k == "A":
            return bytearray(self.bufs[pid[1]])
        if k == "M":
            m = self.bufs[pid[1]]
            return m if pid[2] == "B" and len(pid[3]) == 1 else m.cast(pid[2], pid[3])
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


class _State:
    """What the iterable owns; torn down by :py:func:`_teardown` (also from a
    finalizer, so it must not refer to the iterable)."""

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.pids: list[int] = []
        self.ctrls: list[Any] = []
        self.slots: list[Any] = []
        self.pool: Any = None
        self.reader: Any = None
        self.buffer_size = 0
        self.closed = False
        self.control_bytes = 0

    def send(self, i: int, msg: Any) -> None:
        data = pickle.dumps(msg, protocol=5)
        self.ctrls[i].send_bytes(data)
        self.control_bytes += len(data)

    def recv(self, i: int) -> Any:
        data = self.ctrls[i].recv_bytes()
        self.control_bytes += len(data)
        return pickle.loads(data)


def _teardown(st: _State) -> None:
    if st.closed:
        return
    st.closed = True
    for i in range(len(st.ctrls)):
        try:
            st.send(i, ("stop",))
        except (OSError, ValueError):
            pass
    if st.pool is not None:
        st.pool.shutdown_arena()  # wakes workers blocked on a full pool
    for s in st.slots:  # and those waiting for a slot of buffer_size
        for _ in range(st.buffer_size + 1):
            s.release()
    deadline = time.monotonic() + 0.5
    for p in st.procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in st.procs:
        if p.exitcode is None:
            p.kill()
    for p in st.procs:
        p.join(1.0)
        try:
            p.close()
        except ValueError:
            pass
    for c in st.ctrls:
        c.close()
    st.reader = None
    if st.pool is not None:
        st.pool.close()  # items still held keep their segments mapped
        st.pool.unlink()


def _describe_exit(p: Any) -> str:
    code = p.exitcode
    if code is not None and code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class SubprocessIterable:
    """What :py:func:`iterate_in_subprocess` returns: each ``iter()`` is a
    pass, in the same workers, over ``fn()``'s items. ``close()`` (or
    ``with``, or garbage collection) stops the workers and frees the pool."""

    def __init__(self, fn: Callable[[], Iterable[Any]], *, num_workers: int, buffer_size: int,
                 initializer: Callable[[], Any] | None, mp_context: Any,
                 timeout: float | None, daemon: bool, arena: Any, ordered: bool,
                 segment_size: int | None, oob_threshold: int) -> None:
        from . import SharedMemorySegmentPool

        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, not {num_workers}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, not {buffer_size}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be None or positive, not {timeout}")
        self._fn, self._n, self._bs = fn, num_workers, buffer_size
        self._timeout = timeout
        self._ordered = ordered
        self._pass = 0
        self._running = False
        st = self._st = _State()
        st.buffer_size = buffer_size
        self._finalizer = util.Finalize(self, _teardown, args=(st,), exitpriority=100)
        ctx: Any = (multiprocessing.get_context(mp_context) if mp_context is None
               or isinstance(mp_context, str) else mp_context)
        self._count = num_workers * (buffer_size + 1) + 8
        if arena is not None:
            st.pool = arena
        elif segment_size is not None:
            st.pool = SharedMemorySegmentPool(segment_size, self._count)
        if st.pool is not None:
            st.reader = st.pool.open_reader()
        for wid in range(num_workers):
            mine, theirs = ctx.Pipe(duplex=True)
            slot = ctx.Semaphore(buffer_size)
            p = ctx.Process(
                target=_worker_main, name=f"segpool-worker-{wid}", daemon=daemon,
                args=(wid, num_workers, os.getpid(), fn, initializer, st.pool, theirs, slot,
                      oob_threshold))
            st.ctrls.append(mine)
            st.slots.append(slot)
            p.start()
            st.procs.append(p)
            st.pids.append(p.pid)
            theirs.close()

    @property
    def pool(self) -> Any:
        """The pool items travel through (``None`` until the first item sized it)."""
        return self._st.pool

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return list(self._st.pids)

    @property
    def control_bytes(self) -> int:
        """Bytes the parent has sent and received on the control pipes."""
        return self._st.control_bytes

    def close(self) -> None:
        """Stop the workers (within 1 s, even blocked on a full pool) and free
        the pool. Items already received stay valid."""
        self._finalizer()

    def __enter__(self) -> SubprocessIterable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        if self._st.closed:
            raise RuntimeError("this iterate_in_subprocess iterable was closed (a pass ended "
                               "early, or close() was called): the workers are gone; make a new one")
        if self._running:
            raise RuntimeError("a pass over this iterable is still running: finish it (or "
                               "close it) before starting another")
        return self._run()

    # -- one pass -------------------------------------------------------------

    def _check_workers(self) -> None:
        for wid, p in enumerate(self._st.procs):
            if not self._st.closed and p.exitcode is not None:
                raise RuntimeError(f"segpool worker {wid} (pid {p.pid}) {_describe_exit(p)} "
                                   f"while iterating")

    def _deadline(self) -> float:
        return float("inf") if self._timeout is None else time.monotonic() + self._timeout

    def _timed_out(self) -> IterationTimeout:
        return IterationTimeout(f"no item from the segpool workers in {self._timeout} s "
                                f"(timeout=); the workers were stopped")

    def _await_pool(self, deadline: float) -> None:
        """Sizes the pool from the first item a worker reports."""
        from . import SharedMemorySegmentPool

        st = self._st
        while st.pool is None:
            ready = connection.wait(st.ctrls, timeout=min(_POLL, max(0.0, deadline - time.monotonic())))
            for c in ready:
                i = st.ctrls.index(c)
                try:
                    msg = st.recv(i)
                except EOFError:
                    continue
                if msg[0] == "size" and st.pool is None:
                    size = max(1 << 16, 1 << (2 * msg[1] - 1).bit_length())
                    st.pool = SharedMemorySegmentPool(size, self._count)
                    st.reader = st.pool.open_reader()
                    for j in range(len(st.ctrls)):
                        st.send(j, ("pool", st.pool))
            if st.pool is None:
                self._check_workers()
                if time.monotonic() >= deadline:
                    raise self._timed_out()

    def _next_unit(self, deadline: float) -> tuple[int, int, Any]:
        st = self._st
        while True:
            if st.pool is None:
                self._await_pool(deadline)
            try:
                view = st.reader.recv(min(_POLL, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                self._check_workers()
                if time.monotonic() >= deadline:
                    raise self._timed_out() from None
                continue
            header = _HEADER.unpack_from(view, 0)
            if header[0] != _MAGIC or header[3] != self._pass:
                continue  # not ours, or a unit of an earlier pass: dropped
            kind, wid, obj = _rebuild(view, header)
            del view
            if kind == _ERROR:
                name, msg, tb = obj
                pid = st.pids[wid]
                raise RuntimeError(f"segpool worker {wid} (pid {pid}) raised {name}: {msg}\n\n"
                                   f"Worker traceback:\n{tb}")
            if kind == _OVERSIZE:
                raise ValueError(f"segpool worker {wid}: {obj}")
            return kind, wid, obj

    def _run(self) -> Iterator[Any]:
        st = self._st
        self._running = True
        self._pass += 1
        done = False
        try:
            for i in range(self._n):
                st.send(i, ("start", self._pass))
            active = list(range(self._n))
            slots = st.slots
            if self._ordered:
                stash: list[collections.deque[tuple[int, Any]]] = [
                    collections.deque() for _ in range(self._n)]
                turn = 0
                while active:
                    turn %= len(active)
                    w = active[turn]
                    deadline = self._deadline()
                    while not stash[w]:
                        kind, wid, obj = self._next_unit(deadline)
                        stash[wid].append((kind, obj))
                    kind, obj = stash[w].popleft()
                    if kind == _END:
                        del active[turn]
                        continue
                    turn += 1
                    slots[w].release()
                    yield obj
                    del obj
            else:
                while active:
                    kind, wid, obj = self._next_unit(self._deadline())
                    if kind == _END:
                        active.remove(wid)
                        continue
                    slots[wid].release()
                    yield obj
                    del obj
            done = True
        finally:
            self._running = False
            if not done:
                _teardown(st)


def iterate_in_subprocess(
    fn: Callable[[], Iterable[Any]],
    *,
    num_workers: int = 1,
    buffer_size: int = 3,
    initializer: Callable[[], Any] | None = None,
    mp_context: str | Any | None = None,
    timeout: float | None = None,
    daemon: bool = False,
    arena: Any = None,
    ordered: bool = True,
    segment_size: int | None = None,
    oob_threshold: int = 4096,
) -> SubprocessIterable:
    """Run ``fn()`` in ``num_workers`` processes and iterate its items here,
    each item whole through a segpool pool (see python/README.md).

    Args:
        fn: A picklable zero-argument callable returning an iterable; it runs
            in each worker (use :py:func:`get_worker_info` to shard).
        num_workers: Worker processes, all writing into one pool.
        buffer_size: Items a worker may have produced and the parent not yet
            delivered.
        initializer: Runs once in each worker before its first pass.
        mp_context: A start method name or a multiprocessing context.
        timeout: Seconds to wait for the next item before raising
            :py:exc:`IterationTimeout` (``None``: for ever).
        daemon: Start the workers as daemon processes.
        arena: A :py:class:`SharedMemorySegmentPool` to use; the iterable
            owns it from now on (closes it at teardown).
        ordered: Round-robin over the workers (worker 0's first item, worker
            1's first, ...; finished workers skipped); ``False``: as
            committed.
        segment_size: Size of the pool's segments when ``arena`` is None;
            ``None`` sizes them from the first item (twice its size, a power
            of two, at least 64 KiB).
        oob_threshold: Binaries of at least this many bytes go out of band.
    """
    return SubprocessIterable(
        fn, num_workers=num_workers, buffer_size=buffer_size, initializer=initializer,
        mp_context=mp_context, timeout=timeout, daemon=daemon, arena=arena, ordered=ordered,
        segment_size=segment_size, oob_threshold=oob_threshold)
