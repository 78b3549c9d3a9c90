"""Torch tensors through the pool (skipped when torch is not installed)."""

from __future__ import annotations

import gc

import pytest

from conftest import require_spdl  # noqa: E402

torch = pytest.importorskip("torch")
require_spdl()
from spdl.pipeline._arena._offload import _offload, _restore  # noqa: E402
from spdl.pipeline._arena._registry import _default_registry  # noqa: E402


def test_a_tensor_restores_zero_copy_and_holds_its_segment(make_pool):
    pool = make_pool(segment_size=1 << 20, count=2)
    writer, reader, registry = pool.open_writer(), pool.open_reader(), _default_registry()
    sent = torch.arange(64 * 1024, dtype=torch.float32).reshape(64, 1024)
    got = _restore(_offload({"t": sent}, writer, registry), reader, registry)["t"]
    assert torch.equal(got, sent) and got.shape == (64, 1024)
    pool._segment(0)[0:4] = bytes(4)  # zero copy: the first float changes under it
    assert got[0, 0].item() == 0.0
    part = got[10:20].clone(), got[5:7]
    del got
    gc.collect()
    assert pool.reclaimed == 0  # the slice still aliases the segment
    del part
    gc.collect()
    assert pool.reclaimed == 1
