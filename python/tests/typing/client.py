"""A typed client of segpool, checked by ``mypy --strict`` (test_typing.py).

It passes a segpool pool where SPDL's typed API wants its arena protocols,
and uses the endpoints the way SPDL's offload does.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from spdl.pipeline import iterate_in_subprocess
from spdl.pipeline._arena._protocol import (
    ArenaProtocol,
    ArenaReaderProtocol,
    ArenaWriterProtocol,
)

import segpool


def frames() -> Iterator[npt.NDArray[np.uint8]]:
    for i in range(3):
        yield np.full((4, 4), i, dtype=np.uint8)


def total_of_frames() -> int:
    with segpool.SharedMemorySegmentPool(1 << 16, 4) as pool:
        return sum(int(a[0, 0]) for a in iterate_in_subprocess(frames, arena=pool))


def by_hand(pool: segpool.SharedMemorySegmentPool) -> bytes:
    arena: ArenaProtocol = pool
    writer: ArenaWriterProtocol = arena.open_writer()
    reader: ArenaReaderProtocol = arena.open_reader()
    writer.begin_unit()
    offset, nbytes = writer.write_binary(b"typed")
    span: int = writer.commit_unit()
    view: memoryview[bytes] = reader.read_binary(offset, nbytes)
    reader.end_unit(span, [view])
    return bytes(view)


def beyond_spdl(pool: segpool.SharedMemorySegmentPool) -> dict[str, int | bool]:
    writer = pool.open_writer()
    writer.begin_unit()
    offset, loan = writer.reserve(16)
    loan[:] = bytes(16)
    loan.release()
    writer.write_binary(np.arange(4, dtype=np.int32))  # any buffer, NumPy included
    pool.open_reader().end_unit(writer.commit_unit())
    clone: segpool.SharedMemorySegmentPool = pickle.loads(pickle.dumps(pool))
    clone.close()
    assert offset >= 0 and segpool.__version__
    return pool.stats()


def items() -> Iterator[dict[str, npt.NDArray[np.uint8]]]:
    info = segpool.get_worker_info()
    shard = 0 if info is None else info.id
    frame: npt.NDArray[np.uint8] = segpool.loan_array((4, 4), np.uint8)
    frame[...] = shard
    yield {"frame": frame}


def own_iterator() -> int:
    total = 0
    with segpool.iterate_in_subprocess(items, num_workers=2, buffer_size=3, ordered=False,
                                       segment_size=1 << 16, timeout=10.0) as it:
        for item in it:
            total += int(item["frame"][0, 0])
    view = segpool.SharedMemorySegmentPool(4096, 2).open_reader().recv(0.0)
    return total + len(view)
