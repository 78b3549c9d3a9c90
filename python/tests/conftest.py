"""Shared fixtures.

``SEGPOOL_START_METHOD`` (fork, spawn or forkserver) sets multiprocessing's
default start method for the whole session, so CI runs the suite once per
method; the end-to-end tests also pass every ``mp_context`` explicitly, which
covers a context that differs from the default.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import sys

import pytest

import segpool

START_METHOD = os.environ.get("SEGPOOL_START_METHOD")
if START_METHOD:
    multiprocessing.set_start_method(START_METHOD, force=True)

METHODS = ["fork", "spawn", "forkserver"]


def contexts() -> list[str | None]:
    """The ``mp_context`` values an end-to-end test runs with: None (the
    default start method) and one that differs from it. A run with no
    default set (a developer's) takes every method; CI's three runs, one per
    default, take the next method in turn, so together they cover each
    method as the default and as a differing explicit context."""
    if not START_METHOD:
        return [*METHODS, None]
    return [None, METHODS[(METHODS.index(START_METHOD) + 1) % len(METHODS)]]


# Names this suite could leave: segpool's named objects and Python's
# SharedMemory ("psm_"). Other programs on the machine may come and go.
_OURS = ("segpool", "psm_")


def _shm_names() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith(_OURS)}
    except FileNotFoundError:
        return set()


@pytest.fixture(autouse=True, scope="session")
def nothing_left_in_dev_shm():
    """Nothing the suite creates may outlive it in /dev/shm."""
    before = _shm_names()
    yield
    left = _shm_names() - before
    assert not left, f"left behind in /dev/shm: {sorted(left)}"


@pytest.fixture
def make_pool():
    """Creates pools and closes them at the end of the test."""
    pools: list[segpool.SharedMemorySegmentPool] = []

    def make(segment_size: int = 1 << 16, count: int = 4, **kw) -> segpool.SharedMemorySegmentPool:
        pool = segpool.SharedMemorySegmentPool(segment_size, count, **kw)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
        pool.unlink()


def put(writer, *binaries: bytes) -> tuple[list[tuple[int, int]], int]:
    """Writes one unit of ``binaries``; returns their placements and the span."""
    writer.begin_unit()
    placements = [writer.write_binary(b) for b in binaries]
    return placements, writer.commit_unit()


@functools.cache
def spdl_usable() -> str | None:
    """Why SPDL's arena cannot run on this Python, or None if it can."""
    if sys.version_info >= (3, 13):
        # spdl-core 0.8.0's _offload assigns Pickler.persistent_id, which
        # CPython 3.13 made read-only on the C pickler.
        return "spdl-core 0.8.0 does not run on Python 3.13+ (Pickler.persistent_id is read-only)"
    try:
        import spdl.pipeline._arena._offload  # noqa: F401
    except ImportError as e:  # not installed, or (3.10) needs typing.Self
        # Asked once: a failed import can leave submodules in sys.modules.
        return f"spdl-core is not importable here: {e}"
    return None


# CI sets these where the dependency is installed, so that a broken install
# fails the run instead of skipping tests quietly.
REQUIRE_SPDL = os.environ.get("SEGPOOL_REQUIRE_SPDL") == "1"
REQUIRE_TORCH = os.environ.get("SEGPOOL_REQUIRE_TORCH") == "1"


def require_spdl() -> None:
    """Skip the calling test module where SPDL's arena cannot run."""
    why = spdl_usable()
    if why and REQUIRE_SPDL:
        pytest.fail(f"SEGPOOL_REQUIRE_SPDL=1, but {why}", pytrace=False)
    if why:
        pytest.skip(why, allow_module_level=True)


def require_torch():
    """torch, or a skip of the calling module where it is not installed."""
    if REQUIRE_TORCH:
        import torch

        return torch
    return pytest.importorskip("torch")


@pytest.fixture
def ctrl_c():
    """SIGINT raises KeyboardInterrupt for the test, whatever the suite
    inherited: a suite started as a background job of a non-interactive
    shell inherits SIGINT ignored, and Python then installs no handler."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
