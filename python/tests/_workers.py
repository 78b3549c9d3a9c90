"""Worker-side sources for the end-to-end tests (importable by spawned children)."""

from __future__ import annotations

import os
import time

import numpy as np


def item(i: int, nbytes: int) -> dict:
    """Item ``i``: a payload whose every byte says ``i``, and small metadata."""
    return {
        "index": i,
        "payload": np.full(nbytes, i % 251, dtype=np.uint8),
        "extra": [np.arange(1024, dtype=np.int64) + i, b"x" * 5000],
    }


def check(got: dict, i: int, nbytes: int) -> None:
    assert got["index"] == i
    assert got["payload"].nbytes == nbytes
    assert int(got["payload"].min()) == int(got["payload"].max()) == i % 251
    assert np.array_equal(got["extra"][0], np.arange(1024, dtype=np.int64) + i)
    assert bytes(got["extra"][1]) == b"x" * 5000


class Items:
    """A re-iterable source of ``n`` items of ``nbytes``."""

    def __init__(self, n: int, nbytes: int) -> None:
        self.n, self.nbytes = n, nbytes

    def __iter__(self):
        for i in range(self.n):
            yield item(i, self.nbytes)


def items(n: int = 20, nbytes: int = 1 << 16) -> Items:
    return Items(n, nbytes)


def failing():
    yield item(0, 1 << 14)
    raise ValueError("the worker's own error")


def dying():
    yield item(0, 1 << 14)
    os._exit(3)


def endless(nbytes: int = 1 << 14):
    i = 0
    while True:
        yield item(i, nbytes)
        i += 1


def slow_endless():
    i = 0
    while True:
        time.sleep(0.01)
        yield item(i, 1 << 14)
        i += 1
