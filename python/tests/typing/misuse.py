"""Calls the stubs must refuse (test_typing.py expects exactly these errors)."""

from __future__ import annotations

import segpool

pool = segpool.SharedMemorySegmentPool(4096, 2)
writer = pool.open_writer()
writer.write_binary(3)  # E: not a buffer
pool.open_reader().read_binary("0", 1)  # E: not an int
span: str = writer.commit_unit()  # E: an int
segpool.iterate_in_subprocess(lambda: [1], num_workers="2")  # E: not an int
