"""Type stubs for segpool's native module (``segpool._segpool``).

``Writer`` and ``Reader`` satisfy SPDL's ``ArenaWriterProtocol`` and
``ArenaReaderProtocol``, so ``iterate_in_subprocess(fn, arena=pool)``
type-checks with a ``segpool.SharedMemorySegmentPool``.
"""

import sys
from typing import Any, Final, Protocol

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

class _ArrayInterface(Protocol):
    """A NumPy array (or scalar) as its stubs describe it before Python 3.12,
    where they do not declare the buffer protocol they implement."""

    @property
    def __array_interface__(self) -> dict[str, Any]: ...

__version__: Final[str]

class ArenaDesyncError(RuntimeError):
    """Envelopes and units are out of step: the reader refused to pair an
    envelope with a unit that is not its own (no unit published for it, a
    span that disagrees, a read past the unit's end)."""

class SegmentBuffer:
    """Exports the bytes of a segment as a writable buffer; every memoryview,
    NumPy array or Torch tensor made from it keeps them alive. Not
    instantiable from Python."""

class Writer:
    """Writer endpoint (the worker side). Use it from one thread at a time:
    a call while another thread is in one raises :py:exc:`RuntimeError`."""

    def reset(self) -> None:
        """Prepare for a new iteration: abort a unit left open. Units already
        published stay queued; restored views stay valid."""

    def begin_unit(self) -> None:
        """Claim a free segment for a new unit, waiting up to the pool's
        ``acquire_timeout`` with the GIL released (Ctrl-C interrupts).

        Raises:
            BufferError: ``acquire_timeout=0`` and no segment is free; no
                segment came free within the timeout; or the pool was shut
                down.
            RuntimeError: a unit is already open.
        """

    def write_binary(self, data: Buffer | _ArrayInterface) -> tuple[int, int]:
        """Copy one C-contiguous bytes-like object (bytes, bytearray,
        memoryview, a NumPy array, ...) into the open unit.

        Returns:
            ``(offset, nbytes)``: ``offset`` is an opaque token that names
            the unit and the 64-byte-aligned place in it; pass both,
            unchanged, to :py:meth:`Reader.read_binary`.

        Raises:
            BufferError: the unit would exceed ``segment_size`` (nothing is
                written; the unit stays open), or ``data`` is not
                C-contiguous.
            TypeError: ``data`` is not bytes-like.
        """

    def reserve(self, nbytes: int) -> tuple[int, memoryview]:
        """The loan call: reserve ``nbytes`` at the next 64-byte-aligned
        offset and return ``(offset, memoryview)`` to fill in place (decode
        straight into it, e.g. through ``np.frombuffer``). Release the view,
        and arrays made from it, before :py:meth:`commit_unit`. The offset is
        an opaque token, as from :py:meth:`write_binary`.

        Raises:
            ValueError: ``nbytes`` is negative.
            BufferError: the unit would exceed ``segment_size``.
        """

    def commit_unit(self, lent: bool = False) -> int:
        """Publish the unit; return its span, an opaque token that names the
        unit (an unsigned 64-bit integer) for :py:meth:`Reader.end_unit`.
        ``lent=True`` publishes it even while views from :py:meth:`reserve`
        are alive (they stay valid memory; the caller must not write through
        them any more).

        Raises:
            BufferError: views from :py:meth:`reserve` are still alive (the
                unit stays open), or the pool was shut down.
        """

    def abort_unit(self) -> None:
        """Discard the open unit; its segment returns to the pool (once any
        view from :py:meth:`reserve` is released)."""

    @property
    def unit_len(self) -> int:
        """Bytes the open unit spans so far (0 outside a unit)."""

class Reader:
    """Reader endpoint (the parent side). Each envelope names its unit, so
    units from any number of writers, arriving in any order, are each read
    from their own segment."""

    zero_copy: bool
    """Always ``True``: :py:meth:`read_binary` returns live views of shared memory."""

    def reset(self) -> None:
        """Prepare for a new iteration; views from earlier ones stay valid."""

    def read_binary(self, offset: int, nbytes: int) -> memoryview[bytes]:
        """A writable memoryview of ``nbytes`` at ``offset`` (a token from
        :py:meth:`Writer.write_binary`) in the unit the token names. The
        segment returns to the pool when the last view derived from the unit
        is collected.

        Raises:
            ArenaDesyncError: the offset is no token of this package, the
                pool has no committed unit it names (ended already, or
                another pool's), another envelope's unit is still open, or
                the range runs past the unit.
            ValueError: ``nbytes`` is negative.
        """

    def recv(self, timeout: float | None = None) -> memoryview[bytes]:
        """Wait for the next published unit, from any writer, and return a
        writable memoryview over the whole of it. Spins briefly, then sleeps
        on the pool's futex with the GIL released; Ctrl-C interrupts. The
        segment returns to the pool when the last view derived from it is
        collected.

        Raises:
            TimeoutError: no unit within ``timeout`` seconds (``None``: wait
                for ever).
            BufferError: the pool was shut down and every unit received.
            ValueError: ``timeout`` negative.
        """

    def end_unit(self, span: int, pinned: list[object] | None = None) -> None:
        """End the unit ``span`` (a token from :py:meth:`Writer.commit_unit`)
        names, taking it from the pool if it had no read. Its segment stays
        reserved while any view of it lives and until every anchor in
        ``pinned`` has been collected, then returns to the pool.

        Raises:
            ArenaDesyncError: the pool has no committed unit ``span`` names,
                or another envelope's unit is still open.
            TypeError: an anchor in ``pinned`` cannot be weakly referenced.
        """

class Pool:
    """The native pool behind :py:class:`segpool.SharedMemorySegmentPool`."""

    def __init__(
        self, segment_size: int, count: int, acquire_timeout: float = 60.0, prefault: bool = False
    ) -> None: ...
    @staticmethod
    def _attach(
        fd: int, segment_size: int, count: int, acquire_timeout: float, total_len: int
    ) -> Pool: ...
    def _fd(self) -> int: ...
    @property
    def _total_len(self) -> int: ...
    @property
    def segment_size(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def acquire_timeout(self) -> float: ...
    @property
    def published(self) -> int: ...
    @property
    def reclaimed(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def is_shutdown(self) -> bool: ...
    def stats(self) -> dict[str, int | bool]: ...
    def shutdown_arena(self) -> None: ...
    def close(self) -> None: ...
    def unlink(self) -> None: ...
    def open_writer(self) -> Writer: ...
    def open_reader(self) -> Reader: ...
    def _segment(self, index: int) -> memoryview: ...

class ItemWriter:
    """iterate_in_subprocess's worker side: one call per unit (python/src/item.rs)."""

    def __init__(self, pool: Pool) -> None: ...
    @staticmethod
    def size_of(env: Buffer, bufs: list[Any]) -> int: ...
    def put(self, head: tuple[int, int, int, int], env: Buffer, bufs: list[Any]) -> int: ...
    def put_array(
        self, head: tuple[int, int, int, int], array: Any, threshold: int
    ) -> int | None: ...

class ItemReader:
    """iterate_in_subprocess's parent side: the next unit, parsed, with a
    blocking wait on the pool's futex (python/src/item.rs)."""

    def __init__(self, pool: Pool) -> None: ...
    def recv(
        self, timeout: float | None = None
    ) -> tuple[int, int, int, int, bytes, list[memoryview]]: ...
