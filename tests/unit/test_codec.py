"""builder.codec: quantisation bounds, lossless entropy coding, bit-exact bitstream round trips, corruption."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from builder.codec import (
    FORMAT_VERSION,
    CorruptBitstream,
    UnsupportedVersion,
    decode_symbols,
    decode_tensors,
    default_axis,
    dequantize,
    encode_symbols,
    encode_tensors,
    fake_quantize,
    prune_global,
    quantize,
    quantize_tensors,
)
from builder.config import QuantConfig


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "stem.weight": torch.randn(32, 16, generator=g) * 0.1,
        "blocks.0.conv.weight": torch.randn(24, 8, 3, 3, generator=g) * 0.05,
        "blocks.0.conv.bias": torch.randn(24, generator=g) * 0.01,
        "head.weight": torch.zeros(3, 24, 1, 1),  # all-zero tensor: scale falls back to 1.0
        "scalar": torch.tensor(0.75),
        "empty": torch.zeros(0, 4),
        "half": torch.randn(4, 4, generator=g).half(),
        "steps": torch.tensor([3, 1, 4], dtype=torch.int64),  # integer buffer, stored raw
    }


# --- quant ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_quantize_error_bounded_by_half_scale(bits, axis):
    w = torch.randn(16, 8, 3) * 0.3
    qt = quantize(w, bits, axis)
    top = 2 ** (bits - 1) - 1
    assert qt.q.dtype == np.int32 and qt.scale.dtype == np.float32
    assert np.abs(qt.q).max() <= top
    assert qt.scale.size == (1 if axis is None else w.shape[axis])
    err = (dequantize(qt) - w).abs()
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    bound = torch.from_numpy(qt.scale).reshape(shape) / 2
    assert (err <= bound * (1 + 1e-5) + 1e-7).all()


def test_quantize_preserves_zeros_and_handles_edge_shapes():
    w = torch.randn(8, 5)
    w[:, ::2] = 0
    w[3] = 0  # a whole channel of zeros
    out = fake_quantize(w, 4, 0)
    assert (out[w == 0] == 0).all()
    assert out.dtype == torch.float32 and out.shape == w.shape
    assert torch.equal(fake_quantize(torch.zeros(0, 3), 8, 0), torch.zeros(0, 3))
    assert fake_quantize(torch.tensor(2.5), 8, 0).item() == pytest.approx(2.5)  # 0-D is per-tensor
    assert quantize(torch.randn(7), 8, 0).axis is None  # so is 1-D
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([1.0, float("nan")]), 8, None)


def test_default_axis():
    assert default_axis("w", torch.zeros(4, 3, 3, 3)) == 0
    assert default_axis("w", torch.zeros(4, 3)) == 0
    assert default_axis("b", torch.zeros(4)) is None
    assert default_axis("s", torch.tensor(1.0)) is None


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.9])
def test_prune_global_reaches_sparsity_without_mutating(amount):
    ws = _weights()
    names = ["stem.weight", "blocks.0.conv.weight"]
    before = {n: ws[n].clone() for n in names}
    out = prune_global(ws, amount, names)
    total = sum(ws[n].numel() for n in names)
    zeros = sum(int((out[n] == 0).sum()) for n in names)
    assert zeros == round(amount * total)
    for n in names:
        assert torch.equal(ws[n], before[n])  # inputs untouched
    assert out["blocks.0.conv.bias"] is ws["blocks.0.conv.bias"]  # unnamed tensors pass through
    # Global, not per tensor: every kept magnitude is >= every pruned one.
    kept = torch.cat([out[n][out[n] != 0].abs() for n in names])
    pruned = torch.cat([ws[n][out[n] == 0].abs() for n in names])
    if kept.numel() and pruned.numel():
        assert kept.min() >= pruned.max()


def test_prune_global_rejects_bad_input():
    with pytest.raises(KeyError, match="nope"):
        prune_global(_weights(), 0.5, ["nope"])
    with pytest.raises(ValueError, match="amount"):
        prune_global(_weights(), 1.0, ["stem.weight"])


# --- entropy ----------------------------------------------------------------------------------------------------


def _symbol_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "uniform8": rng.integers(-127, 128, 5000),
        "gaussian8": np.clip(np.rint(rng.normal(0, 30, 20000)), -127, 127),
        "sparse": np.where(rng.random(3000) < 0.9, 0, rng.integers(-7, 8, 3000)),
        "constant": np.full(100, -3),
        "single": np.array([42]),
        "empty": np.zeros(0),
        "two_values": np.array([0, 1] * 50),
        "wide16": rng.integers(-32767, 32768, 3000),
        "laplace16": np.clip(np.rint(rng.laplace(0, 3000, 20000)), -32767, 32767),
        "offset": np.rint(rng.normal(500, 4, 2000)),
        "few_wide": np.array([-32767, 0, 32767]),
    }


@pytest.mark.parametrize("coder", ["ans", "zlib"])
@pytest.mark.parametrize("case", list(_symbol_cases()))
def test_entropy_round_trip(coder, case):
    q = _symbol_cases()[case].astype(np.int32)
    data = encode_symbols(q, coder)
    out = decode_symbols(data, q.size, coder)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, q)


def test_ans_beats_zlib_on_gaussian_weights():
    # What 8-bit per-channel weights look like: bell-shaped symbols filling most of [-127, 127].
    rng = np.random.default_rng(1)
    for n in (2_000, 20_000, 200_000):
        q = np.clip(np.rint(rng.normal(0, 30, n)), -127, 127).astype(np.int32)
        assert len(encode_symbols(q, "ans")) < len(encode_symbols(q, "zlib")), n


def test_entropy_rejects_unknown_coder():
    with pytest.raises(ValueError, match="choose one of"):
        encode_symbols(np.zeros(3, np.int32), "huffman")


# --- bitstream --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coder", ["ans", "zlib"])
@pytest.mark.parametrize("bits", [4, 8, 12])
def test_bitstream_round_trip_is_bit_exact(coder, bits):
    ws = _weights()
    quant = QuantConfig(bits=bits, coder=coder)
    meta = {"inr": {"arch": "nerv", "strides": [5, 2, 2]}, "note": "é"}
    blob = encode_tensors(ws, quant=quant, meta=meta, raw={"steps"}, axes={"stem.weight": 1})
    dec = decode_tensors(blob)
    expected = quantize_tensors(ws, quant, {"stem.weight": 1}, raw={"steps"})
    assert list(dec.tensors) == list(ws)  # insertion order kept
    for name, t in dec.tensors.items():
        assert t.dtype == expected[name].dtype == ws[name].dtype, name
        assert torch.equal(t, expected[name]), name
    assert torch.equal(dec.tensors["steps"], ws["steps"])
    assert dec.meta == meta and dec.quant == quant and dec.format_version == FORMAT_VERSION


def test_bitstream_is_deterministic_and_requires_raw_for_ints():
    ws = _weights()
    quant = QuantConfig()
    assert encode_tensors(ws, quant=quant, meta={}, raw={"steps"}) == encode_tensors(
        ws, quant=quant, meta={}, raw={"steps"}
    )
    with pytest.raises(TypeError, match="raw="):
        encode_tensors(ws, quant=quant, meta={})


def test_bitstream_detects_corruption():
    blob = encode_tensors(_weights(), quant=QuantConfig(), meta={"a": 1}, raw={"steps"})
    rng = np.random.default_rng(0)
    # Every position after magic and version (those have their own errors below).
    for pos in [6, 7, 10, len(blob) // 2, len(blob) - 33, len(blob) - 1, *rng.integers(6, len(blob), 20)]:
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(CorruptBitstream, match="checksum mismatch"):
            decode_tensors(bytes(bad))
    for cut in (len(blob) - 1, len(blob) // 2, 12):
        with pytest.raises(CorruptBitstream):
            decode_tensors(blob[:cut])


def test_bitstream_rejects_wrong_magic_and_version():
    blob = encode_tensors({"w": torch.ones(2, 2)}, quant=QuantConfig(), meta={})
    with pytest.raises(CorruptBitstream, match="not an NVP bitstream"):
        decode_tensors(b"PK\x03\x04" + blob[4:])
    with pytest.raises(CorruptBitstream, match="not an NVP bitstream"):
        decode_tensors(b"")
    future = blob[:4] + struct.pack("<H", FORMAT_VERSION + 1) + blob[6:]
    with pytest.raises(UnsupportedVersion, match=f"reads version {FORMAT_VERSION}"):
        decode_tensors(future)


def test_bitstream_rejects_non_json_meta():
    with pytest.raises(ValueError, match="JSON"):
        encode_tensors({"w": torch.ones(2)}, quant=QuantConfig(), meta={"x": object()})
