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


def torch_items(n: int = 6):
    """Tensors of several dtypes and layouts (torch imported in the worker)."""
    import torch

    for i in range(n):
        base = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64) + i
        yield {
            "index": i,
            "image": base,
            "strided": base[:, ::2],  # non-contiguous: the handler copies it once
            "labels": torch.full((4096,), i, dtype=torch.int64),
            "mask": torch.arange(8192) % (i + 2) == 0,
            "pixels": torch.full((3, 64, 64), i, dtype=torch.uint8),
        }


def torch_check(got: dict, i: int) -> None:
    import torch

    base = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64) + i
    assert got["index"] == i
    assert torch.equal(got["image"], base)
    assert torch.equal(got["strided"], base[:, ::2])
    assert torch.equal(got["labels"], torch.full((4096,), i, dtype=torch.int64))
    assert torch.equal(got["mask"], torch.arange(8192) % (i + 2) == 0)
    assert got["pixels"].shape == (3, 64, 64) and int(got["pixels"].max()) == i
