"""``segpool.iterate_in_subprocess``: whole items through the pool.

Each item travels in one unit, written by one native call in the worker
(``ItemWriter.put``/``put_array``) and read by one in the parent
(``ItemReader.recv``), both in python/src/item.rs, which also documents the
unit's layout: a 64-byte header at offset 0, the out-of-band buffers (each
64-byte aligned), the envelope, and a table of the buffers.

- A bare NumPy array of a plain numeric dtype, C-contiguous, of at least
  ``oob_threshold`` bytes, takes no pickle: its bytes, and its format and
  shape as the envelope; the parent makes it with ``numpy.frombuffer``.
- Anything else is pickled with protocol 5 by a pickler reused across items,
  whose dispatch table turns NumPy arrays, torch CPU tensors and
  memoryviews of at least ``oob_threshold`` bytes into ``PickleBuffer``s
  (out of band, through the buffer callback); the parent calls
  ``pickle.loads(envelope, buffers=views)``. Large ``bytes``/``bytearray``
  inside dicts, lists and tuples need a ``persistent_id`` (the pickler has
  no other hook for them), which is called for every object: a second
  pickler has one, used only for the items that hold such bytes.

The parent's views keep the unit: the segment returns to the pool when the
last of them is collected. Units that hold loans (``loan_array``) are
written through a ``Writer`` instead, in the same layout. Only control
messages cross the pipes (start a pass, stop, the pool when it is sized
from the first item); ends of passes and errors travel as units.
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

from ._segpool import ItemReader, ItemWriter

_MAGIC = b"SPI1"
# magic, kind, worker, pass, seq, envelope offset, envelope length,
# table offset, buffer count
_HEADER = struct.Struct("<4sIIIQQQQQ")
_HEADER_SIZE = 64
_MASK = (1 << 63) - 1  # an offset token's offset in the unit
# an item (pickled), the end of a pass, an error, an oversize item, an item
# with persistent ids (large bytes), a bare NumPy array (no pickle)
_ITEM, _END, _ERROR, _OVERSIZE, _ITEM_PID, _ARRAY = 1, 2, 3, 4, 5, 6
_POLL = 0.1  # how often a waiting parent looks at its workers (s)
_FOREVER = float("inf")


def _is_shutdown(pool: Any) -> bool:
    """Whether ``shutdown_arena`` ran on ``pool`` (one load; no census)."""
    return bool(pool._pool.is_shutdown())


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


# Rebuilders: module-level, so the envelope names them and the parent's
# ``pickle.loads`` calls them with the out-of-band buffers (memoryviews over
# the unit) in place of the PickleBuffers.

_DTYPES: dict[Any, Any] = {}
_NP: Any = None  # numpy, once a rebuilder needed it


def _numpy() -> Any:
    global _NP
    import numpy

    _NP = numpy
    return numpy


def _dtype(key: Any) -> Any:
    d = _DTYPES.get(key)
    if d is None:
        d = _DTYPES[key] = (_NP or _numpy()).dtype(key)
    return d


def _nd(buf: Any, dt: Any, shape: tuple[int, ...]) -> Any:
    """An ndarray over ``buf`` (zero-copy when ``buf`` is a view of the unit)."""
    d = _DTYPES.get(dt)
    a = (_NP or _numpy()).frombuffer(buf, _dtype(dt) if d is None else d)
    return a if len(shape) == 1 else a.reshape(shape)


def _nd_small(data: bytes, dt: Any, shape: tuple[int, ...]) -> Any:
    """An array below the threshold, pickled in band (a writable copy)."""
    import numpy as np

    return np.frombuffer(data, _dtype(dt)).reshape(shape).copy()


def _tensor(buf: Any, dtype: Any, shape: tuple[int, ...], grad: bool) -> Any:
    import torch

    t = torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape)
    return t.requires_grad_() if grad else t


def _mv(buf: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    m = memoryview(buf)
    if fmt == "B" and len(shape) == 1:
        return m
    return m.cast(fmt, shape)  # type: ignore[call-overload]


class _Never:
    """A type no item has."""


# The rebuilders go into every envelope. Named as globals, each costs the
# parent an import lookup per item (``find_class``, about 2 µs); as
# extension codes (copyreg's registry, pickle's own way of shortening
# common globals) a dictionary lookup. The codes are registered by an
# iterable's parent and its workers only, and used only when both hold them
# (a process that already had one of these codes for something else keeps
# it, and the names are then sent in full).
_EXT_BASE = 0x53504900
_REBUILDERS = ("_nd", "_nd_small", "_tensor", "_mv")


def _ext_codes(use: bool) -> bool:
    """Registers (``use``) or withdraws segpool's extension codes in this
    process; whether they are registered now."""
    import copyreg

    registry = getattr(copyreg, "_extension_registry", {})
    ours = [((__name__, name), _EXT_BASE + i) for i, name in enumerate(_REBUILDERS, 1)]
    if use:
        try:
            for key, code in ours:
                if registry.get(key) != code:
                    copyreg.add_extension(key[0], key[1], code)
            return True
        except ValueError:  # taken by someone else: withdraw ours
            pass
    for key, code in ours:
        if registry.get(key) == code:
            copyreg.remove_extension(key[0], key[1], code)
    return False


_SPECS: dict[bytes, tuple[Any, tuple[int, ...] | None, Any]] = {}


def _spec(env: bytes) -> tuple[Any, tuple[int, ...] | None, Any]:
    """(dtype, shape or None for 1-D, numpy.frombuffer) of a bare array's
    envelope: its format character, number of dimensions and shape
    (``ItemWriter.put_array``)."""
    import numpy as np

    ndim = env[1]
    shape = struct.unpack_from(f"<{ndim}Q", env, 2)
    spec = (np.dtype(chr(env[0])), None if ndim == 1 else shape, np.frombuffer)
    if len(_SPECS) > 1024:
        _SPECS.clear()
    _SPECS[env] = spec
    return spec


class _PUnpickler(pickle.Unpickler):
    """The parent's unpickler for items with large ``bytes``/``bytearray``
    (sent as persistent ids that hold a PickleBuffer)."""

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        if pid[0] == "B":
            return bytes(pid[1])
        if pid[0] == "A":
            return bytearray(pid[1])
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def _big_bytes(obj: Any, threshold: int, depth: int = 0) -> bool:
    """Whether ``obj`` (looked into through dicts, lists and tuples) holds a
    ``bytes`` or ``bytearray`` of at least ``threshold`` bytes, which only
    a (slower) pickler with ``persistent_id`` can send out of band. Deep or
    cyclic structures count as yes."""
    t = type(obj)
    if t is bytes or t is bytearray:
        return len(obj) >= threshold
    if t is dict:
        obj = obj.values()
    elif t is not list and t is not tuple:
        return False
    if depth > 8:
        return True
    for v in obj:
        tv = type(v)
        if (tv is dict or tv is list or tv is tuple or tv is bytes or tv is bytearray) and \
                _big_bytes(v, threshold, depth + 1):
            return True
    return False


class _PPickler(pickle.Pickler):
    """The worker's pickler for items with large ``bytes``/``bytearray``."""

    threshold = 0

    def persistent_id(self, obj: Any) -> Any:  # noqa: D102
        t = type(obj)
        if (t is bytes or t is bytearray) and len(obj) >= self.threshold:
            return ("B" if t is bytes else "A", pickle.PickleBuffer(obj))
        return None


def _reducers(worker: _Worker) -> dict[type, Callable[[Any], Any]]:
    """The pickler's dispatch table: NumPy arrays, torch CPU tensors and
    memoryviews of at least the threshold go out of band (PickleBuffers,
    which the pickler hands to the buffer callback)."""
    import copyreg

    table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
    threshold = max(1, worker.threshold)
    PB = pickle.PickleBuffer

    def memview(m: memoryview) -> Any:
        if m.nbytes >= threshold and m.c_contiguous:
            return _mv, (PB(m), m.format, m.shape)
        return _mv, (m.tobytes(), m.format, m.shape)

    table[memoryview] = memview
    np = sys.modules.get("numpy")
    if np is not None:
        keys: dict[Any, Any] = {}  # dtype -> what the envelope names it by (None: in band)

        def key_of(dt: Any) -> Any:
            if dt.hasobject or dt.itemsize == 0:
                return None
            return dt.str if dt.names is None and dt.subdtype is None else dt

        def ndarray(a: Any) -> Any:
            dt = a.dtype
            key = keys.get(dt, keys)
            if key is keys:
                key = keys[dt] = key_of(dt)
            if key is None:
                return a.__reduce_ex__(2)
            if a.nbytes < threshold:
                return _nd_small, (a.tobytes(), key, a.shape)
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
            return _nd, (PB(a), key, a.shape)

        table[np.ndarray] = ndarray
    torch = sys.modules.get("torch")
    if torch is not None:
        strided = torch.strided

        def tensor(t: Any) -> Any:
            if t.device.type != "cpu" or t.layout is not strided or t.is_sparse or \
                    t.numel() * t.element_size() < threshold:
                return t.__reduce_ex__(5)
            flat = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            return _tensor, (PB(flat), t.dtype, tuple(t.shape), t.requires_grad)

        table[torch.Tensor] = tensor
    return table


class _Worker:
    def __init__(self, wid: int, n: int, pool: Any, ctrl: Any, slot: Any,
                 threshold: int) -> None:
        self.wid, self.n, self.ctrl, self.slot = wid, n, ctrl, slot
        self.threshold = threshold
        self.pool: Any = None
        self.items: Any = None  # the ItemWriter: one call per unit
        self.writer: Any = None  # a Writer, for units that hold loans
        if pool is not None:
            self._attach(pool)
        self.header: memoryview | None = None  # the open (lent) unit's header loan
        self.loans: dict[int, tuple[int, int]] = {}  # address -> (offset, nbytes)
        self.pass_no = 0
        self.seq = 0
        self.bufs: list[Any] = []
        self.file = io.BytesIO()
        self.pickler: Any = None  # made at the first item of a pass

    def _attach(self, pool: Any) -> None:
        self.pool = pool
        self.items = ItemWriter(pool._pool)
        self.writer = pool.open_writer()

    # The pool, when the parent sizes it from the first item.
    def _need_pool(self, size: int) -> None:
        if self.pool is not None:
            return
        if not self.ctrl.poll():
            self.ctrl.send(("size", size))
        msg = self.ctrl.recv()
        if msg[0] != "pool":
            raise _Shutdown
        self._attach(msg[1])

    def _begin(self, counted: bool) -> None:
        """Opens a unit through the Writer, for loans (a slot of
        ``buffer_size`` first, for an item)."""
        if self.header is not None:
            return
        if counted:
            self.slot.acquire()
        try:
            self.writer.begin_unit()
        except BufferError:
            if _is_shutdown(self.pool):
                raise _Shutdown from None
            raise
        self.header = self.writer.reserve(_HEADER_SIZE)[1]

    def _commit_lent(self, kind: int, bufs: list[Any], env: bytes) -> None:
        """Finishes a unit opened by a loan: buffers that are loans of this
        unit are listed where they lie; the others are copied in."""
        import numpy as np

        w = self.writer
        table = array("Q")
        for b in bufs:
            m = memoryview(b)
            addr = np.frombuffer(m, np.uint8).__array_interface__["data"][0] if m.nbytes else 0
            loan = self.loans.get(addr)
            if loan is not None and loan[1] == m.nbytes:
                off, n = loan
            else:
                tok, n = w.write_binary(m)
                off = tok & _MASK
            table.append(off)
            table.append(n)
        env_off, env_len = w.write_binary(env)
        tab_off = w.write_binary(table)[0] & _MASK if bufs else 0
        assert self.header is not None
        _HEADER.pack_into(self.header, 0, _MAGIC, kind, self.wid, self.pass_no, self.seq,
                          env_off & _MASK, env_len, tab_off, len(bufs))
        self.header.release()
        self.header = None
        w.commit_unit(lent=True)
        self.loans.clear()

    def dumps(self, obj: Any) -> tuple[int, bytes]:
        """(kind, envelope) of an item; its out-of-band buffers in ``self.bufs``."""
        bufs, f = self.bufs, self.file
        bufs.clear()
        f.seek(0)
        f.truncate()
        if _big_bytes(obj, self.threshold):
            p = _PPickler(f, 5, buffer_callback=bufs.append)
            p.threshold = max(1, self.threshold)
            p.dispatch_table = self.pickler.dispatch_table
            p.dump(obj)
            return _ITEM_PID, f.getvalue()
        p = self.pickler
        p.clear_memo()
        p.dump(obj)
        return _ITEM, f.getvalue()

    def put(self, kind: int, obj: Any) -> None:
        if self.pickler is None:
            self.pickler = pickle.Pickler(self.file, 5, buffer_callback=self.bufs.append)
            self.pickler.dispatch_table = _reducers(self)
            np = sys.modules.get("numpy")
            self.ndarray = np.ndarray if np is not None else _Never
        if kind == _ITEM and type(obj) is self.ndarray and self.header is None and \
                self.pool is not None:
            # A bare array: its bytes and its dtype and shape, no pickle.
            self.slot.acquire()
            need = self.items.put_array((_ARRAY, self.wid, self.pass_no, self.seq), obj,
                                        self.threshold)
            if need == 0:
                self.seq += 1
                return
            self.slot.release()
            if need is not None:
                raise _Oversize(need, self.pool.segment_size)
        if kind == _ITEM:
            kind, env = self.dumps(obj)
        else:
            self.bufs.clear()
            env = pickle.dumps(obj, protocol=5)
        bufs = self.bufs
        item = kind == _ITEM or kind == _ITEM_PID
        if self.pool is None:
            self._need_pool(ItemWriter.size_of(env, bufs))
        if self.header is not None:  # a unit opened by loans
            size = self.writer.unit_len + ItemWriter.size_of(env, bufs)
            try:
                self._commit_lent(kind, bufs, env)
            except BufferError:
                if _is_shutdown(self.pool):
                    raise _Shutdown from None
                self.header.release()
                self.header = None
                self.writer.abort_unit()
                self.loans.clear()
                self.slot.release()
                raise _Oversize(size, self.pool.segment_size) from None
            self.seq += 1
            return
        if item:
            self.slot.acquire()
        need = self.items.put((kind, self.wid, self.pass_no, self.seq), env, bufs)
        bufs.clear()
        if need:
            if item:
                self.slot.release()
                raise _Oversize(need, self.pool.segment_size)
            raise RuntimeError(f"a control unit of {need} bytes does not fit a segment")
        self.seq += 1

    def loan(self, nbytes: int) -> tuple[int, memoryview]:
        if self.pool is None:
            self._need_pool(_HEADER_SIZE + _align(nbytes) + 4096)
        self._begin(True)
        off, view = self.writer.reserve(nbytes)
        return off & _MASK, view

    def run_pass(self, fn: Callable[[], Iterable[Any]], init_error: BaseException | None) -> None:
        self.seq = 0
        self.pickler = None  # its table sees the modules fn has imported by now
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
                    _is_shutdown(self.pool):
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
                 threshold: int, ext: bool) -> None:
    global _WORKER, _INFO
    _die_with_parent(parent)
    _ext_codes(ext)
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
                worker._attach(msg[1])
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
            st.reader = ItemReader(st.pool._pool)
        ext = _ext_codes(True)
        for wid in range(num_workers):
            mine, theirs = ctx.Pipe(duplex=True)
            slot = ctx.Semaphore(buffer_size)
            p = ctx.Process(
                target=_worker_main, name=f"segpool-worker-{wid}", daemon=daemon,
                args=(wid, num_workers, os.getpid(), fn, initializer, st.pool, theirs, slot,
                      oob_threshold, ext))
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
        return _FOREVER if self._timeout is None else time.monotonic() + self._timeout

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
                    st.reader = ItemReader(st.pool._pool)
                    for j in range(len(st.ctrls)):
                        st.send(j, ("pool", st.pool))
            if st.pool is None:
                self._check_workers()
                if time.monotonic() >= deadline:
                    raise self._timed_out()

    def _next_unit(self, deadline: float) -> tuple[int, int, Any]:
        st = self._st
        while True:
            if st.reader is None:
                self._await_pool(deadline)
            try:
                kind, wid, pass_no, _, env, bufs = st.reader.recv(
                    _POLL if deadline == _FOREVER
                    else min(_POLL, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                self._check_workers()
                if time.monotonic() >= deadline:
                    raise self._timed_out() from None
                continue
            if pass_no != self._pass:
                continue  # not ours, or a unit of an earlier pass: dropped
            return self._decode(kind, wid, env, bufs)

    def _decode(self, kind: int, wid: int, env: bytes, bufs: list[memoryview]
                ) -> tuple[int, int, Any]:
        """(kind, worker, item) of a unit of this pass: ``_ITEM`` and the
        item, or ``_END``; raises what a worker reported."""
        if kind == _ARRAY:
            spec = _SPECS.get(env) or _spec(env)
            a = spec[2](bufs[0], spec[0])
            return _ITEM, wid, a if spec[1] is None else a.reshape(spec[1])
        if kind == _ITEM:
            return kind, wid, pickle.loads(env, buffers=bufs)
        if kind == _END:
            return kind, wid, None
        if kind == _ITEM_PID:
            return _ITEM, wid, _PUnpickler(io.BytesIO(env), buffers=bufs).load()
        obj = pickle.loads(env)
        if kind == _ERROR:
            name, msg, tb = obj
            pid = self._st.pids[wid]
            raise RuntimeError(f"segpool worker {wid} (pid {pid}) raised {name}: {msg}\n\n"
                               f"Worker traceback:\n{tb}")
        if kind == _OVERSIZE:
            raise ValueError(f"segpool worker {wid}: {obj}")
        raise RuntimeError(f"segpool worker {wid} sent a unit of unknown kind {kind}")

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
            if self._ordered and self._n > 1:
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
                this_pass, specs = self._pass, _SPECS
                while active:
                    reader = st.reader
                    if reader is None or self._timeout is not None:
                        kind, wid, obj = self._next_unit(self._deadline())
                    else:
                        # The common case inline (no call frame per item):
                        # no timeout, and a bare array takes three lines.
                        try:
                            kind, wid, pass_no, _, env, bufs = reader.recv(_POLL)
                        except TimeoutError:
                            self._check_workers()
                            continue
                        if pass_no != this_pass:
                            continue
                        if kind == _ARRAY:
                            spec = specs.get(env) or _spec(env)
                            obj = spec[2](bufs[0], spec[0])
                            if spec[1] is not None:
                                obj = obj.reshape(spec[1])
                        else:
                            kind, wid, obj = self._decode(kind, wid, env, bufs)
                        del env, bufs  # the item alone keeps the unit
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
