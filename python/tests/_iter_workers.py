"""Generators for test_iterate.py (importable by spawned workers)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

import segpool


class nested:
    def __init__(self, n: int = 4) -> None:
        self.n = n

    def __call__(self):
        for i in range(self.n):
            yield make_nested(i)


def make_nested(i: int):
    return {
        "i": i,
        "arr": np.arange(4096, dtype=np.float64) + i,
        "small": np.array([i, i + 1], dtype=np.int16),
        "blob": bytes([i % 256]) * 8192,
        "ba": bytearray(b"z" * 5000),
        "mv": memoryview(bytes(range(256)) * 20),
        "lst": [i, "s", (1.5, None, np.float32(i)), [np.full((64, 64), i, np.uint8)]],
        "t": (b"tiny", i * 2.5),
    }


class Unequal:
    """Worker w yields lengths[w] items (w, k)."""

    def __init__(self, lengths: list[int]) -> None:
        self.lengths = lengths

    def __call__(self):
        info = segpool.get_worker_info()
        assert info is not None and info.pid == os.getpid()
        for k in range(self.lengths[info.id]):
            yield (info.id, k, np.full(2048, k, np.uint8))


class Count:
    def __init__(self, n: int, size: int = 64) -> None:
        self.n, self.size = n, size

    def __call__(self):
        a = np.zeros(self.size, np.uint8)
        for i in range(self.n):
            yield (i, a)


def failing():
    yield 1
    raise KeyError("boom from the worker")


def suicide():
    yield 1
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)
    yield 2


def oversize():
    yield np.zeros(1 << 20, np.uint8)


class forever:
    def __init__(self, size: int = 8192) -> None:
        self.size = size

    def __call__(self):
        while True:
            yield np.zeros(self.size, np.uint8)


def slow():
    yield 1
    time.sleep(30)
    yield 2


_INIT: list[int] = []


def init():
    _INIT.append(os.getpid())


def sees_init():
    yield list(_INIT) == [os.getpid()]


def loaned():
    import torch

    for i in range(3):
        a = segpool.loan_array((100, 100), np.float32)
        a[...] = i
        t = segpool.loan_tensor((64, 64), torch.float32)
        t.fill_(i + 0.5)
        yield {"a": a, "t": t, "addr": a.__array_interface__["data"][0]}


def loaned_np():
    for i in range(3):
        a = segpool.loan_array((100, 100), np.float32)
        a[...] = i
        yield a


def with_torch():
    import torch

    yield {"t": torch.arange(4096, dtype=torch.float32), "b": torch.ones(3000, dtype=torch.bfloat16)}


def array_cases():
    """(label, array) pairs for the bare-array fast path and its fallbacks."""
    big = np.arange(1 << 14, dtype=np.float32).reshape(128, 128)
    return [
        ("u8", np.full(1 << 16, 7, np.uint8)),
        ("f32-2d", big),
        ("bool", np.arange(8192) % 3 == 0),
        ("f16", np.arange(4096, dtype=np.float16)),
        ("i64-3d", np.arange(4096, dtype=np.int64).reshape(16, 16, 16)),
        ("big-endian", np.arange(2048, dtype=">f4")),  # pickle path
        ("complex", np.arange(1024, dtype=np.complex64)),  # pickle path
        ("structured", np.zeros(1024, dtype=[("a", "<i4"), ("b", "<f8")])),
        ("strided", big[:, ::2]),  # not contiguous: sent as a contiguous copy
        ("fortran", np.asfortranarray(big)),
        ("small", np.arange(10, dtype=np.int32)),  # below the threshold: in band
        ("0-d", np.array(3.5)),
        ("empty", np.zeros((0, 4), np.float64)),
    ]


def arrays():
    for _, a in array_cases():
        yield a


def views():
    yield memoryview(b"tiny")  # below the threshold: in band
    shaped = memoryview(np.arange(2048, dtype=np.int32)).cast("B").cast("i", (32, 64))
    yield shaped
    yield np.arange(5000, dtype=np.uint8)[::2].data  # not contiguous: in band
