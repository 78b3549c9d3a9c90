"""segpool: SPDL's shared-memory segment pool on segpool's mechanism.

``segpool.SharedMemorySegmentPool`` is a drop-in replacement for
``spdl.pipeline.SharedMemorySegmentPool``::

    from segpool import SharedMemorySegmentPool
    from spdl.pipeline import iterate_in_subprocess

    pool = SharedMemorySegmentPool(segment_size=32 << 20, count=8)
    for item in iterate_in_subprocess(make_source, arena=pool):
        ...

What changes underneath: a unit takes any free segment (an atomic bitmap),
a segment comes back the moment the last view of it is collected, in any
order (a held item never stalls newer ones), producers sleep on a futex in
the pool itself (no ``multiprocessing.Condition``, so any start method and
any ``mp_context`` work), and the memory is one sealed memfd that the
kernel frees with the last process holding it (nothing in ``/dev/shm``).
"""

from __future__ import annotations

import os
from multiprocessing import context, reduction
from types import TracebackType
from typing import Any

from ._segpool import ArenaDesyncError, Pool as _Pool, Reader, SegmentBuffer, Writer
from ._segpool import __version__
from ._iterate import (
    IterationTimeout,
    SubprocessIterable,
    WorkerInfo,
    get_worker_info,
    iterate_in_subprocess,
    loan_array,
    loan_tensor,
)

__all__ = [
    "ArenaDesyncError",
    "IterationTimeout",
    "Reader",
    "SegmentBuffer",
    "SharedMemorySegmentPool",
    "SubprocessIterable",
    "WorkerInfo",
    "Writer",
    "__version__",
    "get_worker_info",
    "iterate_in_subprocess",
    "loan_array",
    "loan_tensor",
]


class SharedMemorySegmentPool:
    """A pool of shared-memory segments, one per unit, zero-copy on the read side.

    Construct it in the parent process and pass it to
    :py:func:`spdl.pipeline.iterate_in_subprocess` via the ``arena`` argument;
    ownership transfers to the returned iterable, which closes and unlinks it
    at teardown. Restored NumPy/Torch payloads are zero-copy views over shared
    memory; each segment stays out of the producers' reach until the last
    view of it (slices, arrays and tensors made from it included) is
    collected, and then returns to the pool at once, whatever the order.

    The pool pickles: under ``spawn`` and ``forkserver`` its memfd travels
    with multiprocessing's descriptor passing; under ``fork`` the child
    inherits it and attaches again on first use. Units and views a forked
    child inherited are inert there: dropping them frees nothing. Pickled
    anywhere else (a queue, an executor's call), it is a reference: it
    parks nothing, and any process of the same user may load it, any number
    of times, while this process keeps the pool open.

    ``with pool:`` closes and unlinks it at the end of the block.

    Args:
        segment_size: Size of each segment in bytes. Must be at least as large
            as the biggest single pipeline unit (the sum of its offloaded
            binaries, each starting 64-byte aligned).
        count: Number of segments. When the pool is full the producer waits
            for a segment to come back, so ``count`` bounds memory and the
            units in flight. Size it to the working set that keeps the
            consumer fed (``buffer_size`` plus the items the consumer holds).
        acquire_timeout: Seconds ``begin_unit`` waits for a free segment
            before raising :py:exc:`BufferError`. Guards against a stalled or
            dead consumer; ``0`` never waits (raises at once when full).
        prefault: Fault every page of the pool in now, in this process
            (``True``), or let producers fault each page on its first write
            (``False``, the default, as SPDL's pool does). Prefaulting moves
            about 0.6 s per GiB of pool from the producers' first pass into
            the pool's creation.

    Raises:
        ValueError: ``segment_size`` or ``count`` not positive, a pool too
            large to map, or ``acquire_timeout`` negative.
    """

    __slots__ = ("_pool", "__weakref__")

    def __init__(
        self,
        segment_size: int,
        count: int,
        *,
        acquire_timeout: float = 60.0,
        prefault: bool = False,
    ) -> None:
        self._pool: _Pool = _Pool(segment_size, count, float(acquire_timeout), bool(prefault))

    # -- crossing processes ------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        p = self._pool
        fd = p._fd()
        st = os.fstat(fd)
        args = ((st.st_dev, st.st_ino), p.segment_size, p.count, p.acquire_timeout, p._total_len)
        if context.get_spawning_popen() is not None:
            # Pickled for a process being started (spawn, forkserver): the
            # memfd travels with the start itself.
            return (_from_descriptor, (reduction.DupFd(fd), *args))
        # Anywhere else, a reference to this process's descriptor, which the
        # loader opens again through /proc: nothing is parked for a load that
        # may never come (multiprocessing's resource sharer would keep the
        # memory alive until this process exits), and it loads any number of
        # times.
        return (_from_process, (os.getpid(), fd, *args))

    def __enter__(self) -> SharedMemorySegmentPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        self.unlink()

    # -- SPDL's arena protocol ---------------------------------------------

    @property
    def segment_size(self) -> int:
        """Size of each segment in bytes."""
        return self._pool.segment_size

    @property
    def count(self) -> int:
        """Number of segments in the pool."""
        return self._pool.count

    @property
    def acquire_timeout(self) -> float:
        """Seconds ``begin_unit`` waits for a free segment (0: never waits)."""
        return self._pool.acquire_timeout

    @property
    def published(self) -> int:
        """Number of units published, by every writer of the pool."""
        return self._pool.published

    @property
    def reclaimed(self) -> int:
        """Number of units whose segments have been returned to the pool."""
        return self._pool.reclaimed

    def open_writer(self) -> Writer:
        """Return a writer endpoint (call it in the worker process)."""
        return self._pool.open_writer()

    def open_reader(self) -> Reader:
        """Return the reader endpoint (call it in the parent process)."""
        return self._pool.open_reader()

    def shutdown_arena(self) -> None:
        """Wake any producer blocked in ``begin_unit``.

        Sets a sticky shutdown flag in the pool's control page and wakes every
        producer waiting for a segment, which then raises :py:exc:`BufferError`
        promptly; later ``begin_unit`` calls raise too. Safe to call many
        times, from any process.
        """
        self._pool.shutdown_arena()

    def close(self) -> None:
        """Release this process's handle to the pool.

        Wakes blocked producers first (as :py:meth:`shutdown_arena`). Views
        already restored stay valid and readable: each keeps the mapping, and
        the memory goes when the last of them is collected. Never raises for
        live views.
        """
        self._pool.close()

    def unlink(self) -> None:
        """Remove the pool's name from the system (call once, by the owner).

        The pool is an anonymous memfd, so there is no name: the kernel frees
        the memory when the last process holding it lets go. Kept for SPDL's
        protocol; safe to call any number of times, before or after
        :py:meth:`close`.
        """
        self._pool.unlink()

    # -- beyond SPDL -------------------------------------------------------

    def stats(self) -> dict[str, int | bool]:
        """A snapshot for monitoring.

        Keys: ``published``, ``reclaimed``, segments per phase (``free``,
        ``writing``, ``queued``: published and not yet received, ``held``:
        received and still viewed), ``waiting_producers``,
        ``waiting_consumers``, ``generation`` and ``shutdown``.
        """
        return self._pool.stats()

    @property
    def closed(self) -> bool:
        """Whether :py:meth:`close` was called in this process."""
        return self._pool.closed

    def _segment(self, index: int) -> memoryview:
        """A writable memoryview over the whole of segment ``index``.

        For tests and debugging (SPDL's own tests prove that restored views
        alias shared memory by writing through it); it is outside the
        protocol: writing races with whoever owns the segment.
        """
        return self._pool._segment(index)

    def __repr__(self) -> str:
        return (
            f"segpool.SharedMemorySegmentPool(segment_size={self.segment_size}, "
            f"count={self.count}, acquire_timeout={self.acquire_timeout})"
        )


def _from_descriptor(
    dupfd: Any,
    ident: tuple[int, int],
    segment_size: int,
    count: int,
    acquire_timeout: float,
    total_len: int,
) -> SharedMemorySegmentPool:
    """Rebuild a pool pickled for a process start: attach through the memfd
    that came with it."""
    fd = dupfd.detach()
    try:
        return _attached(fd, ident, segment_size, count, acquire_timeout, total_len, "")
    finally:
        # Attaching opened the memfd again through /proc; this copy is spent.
        os.close(fd)


def _from_process(
    pid: int,
    fd: int,
    ident: tuple[int, int],
    segment_size: int,
    count: int,
    acquire_timeout: float,
    total_len: int,
) -> SharedMemorySegmentPool:
    """Rebuild a pool pickled by reference: open the pickling process's
    descriptor again through /proc."""
    where = f"process {pid} (fd {fd})"
    try:
        own = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise ValueError(_gone(where, e.strerror or str(e))) from e
    try:
        return _attached(own, ident, segment_size, count, acquire_timeout, total_len, where)
    finally:
        os.close(own)


def _attached(
    fd: int,
    ident: tuple[int, int],
    segment_size: int,
    count: int,
    acquire_timeout: float,
    total_len: int,
    where: str,
) -> SharedMemorySegmentPool:
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != ident:
        raise ValueError(_gone(where or f"fd {fd}", "that descriptor now names another file"))
    pool = SharedMemorySegmentPool.__new__(SharedMemorySegmentPool)
    pool._pool = _Pool._attach(fd, segment_size, count, acquire_timeout, total_len)
    return pool


def _gone(where: str, why: str) -> str:
    return (
        f"cannot load this pickled SharedMemorySegmentPool: the pool it refers to is no longer "
        f"open in {where}: {why}. A pool pickled outside a process start is a reference, valid "
        f"while the process that pickled it keeps the pool open: load it sooner, or pass the "
        f"pool to the process as an argument (multiprocessing.Process, iterate_in_subprocess)"
    )
