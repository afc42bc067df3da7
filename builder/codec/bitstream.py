"""Versioned container for a dict of tensors: quantised + entropy-coded weights, raw buffers, a JSON header.

Layout (all integers little-endian)::

    b"NVPB" | format version u16 | header length u32 | header JSON (utf-8) | sections... | SHA-256 (32 bytes)

The SHA-256 covers every byte before it. The header holds the caller's ``meta``, ``quant`` (``QuantConfig``) and a
``tensors`` table in insertion order; each row gives ``name, dtype, shape, axis, bits, coder, offset, length,
scales`` where ``offset`` counts from the first section byte. A quantised section is ``scales`` float32 values
followed by the entropy-coded symbols; a raw section (``coder == "raw"``) is the tensor's little-endian bytes.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from builder.codec.entropy import decode_symbols, encode_symbols
from builder.codec.quant import QuantizedTensor, default_axis, dequantize, quantize
from builder.config import QuantConfig

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CorruptBitstream",
    "DecodedTensors",
    "UnsupportedVersion",
    "decode_tensors",
    "encode_tensors",
    "quantize_tensors",
]

MAGIC = b"NVPB"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")  # magic, format version, header length
_DIGEST = 32
_RAW = "raw"


class CorruptBitstream(ValueError):
    """The bytes are not a readable NVP bitstream (wrong magic, bad checksum, truncated, inconsistent header)."""


class UnsupportedVersion(ValueError):
    """The bitstream was written in a format version this build cannot read."""


@dataclass(frozen=True)
class DecodedTensors:
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    quant: QuantConfig
    format_version: int


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise CorruptBitstream(f"unknown dtype {name!r} in the tensor table")
    return dtype


def _raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; its bits are an int16
        t = t.view(torch.int16)
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def _raw_tensor(data: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    carrier = torch.int16 if dtype == torch.bfloat16 else dtype
    np_dtype = torch.empty(0, dtype=carrier).numpy().dtype.newbyteorder("<")
    if len(data) != math.prod(shape) * np_dtype.itemsize:
        raise CorruptBitstream(f"raw section holds {len(data)} bytes, expected shape {shape} of {dtype}")
    arr = np.frombuffer(data, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    t = torch.from_numpy(arr.reshape(shape).copy())
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


def _check_raw(name: str, t: torch.Tensor, raw: set[str]) -> bool:
    if name in raw:
        return True
    if not t.is_floating_point():
        raise TypeError(f"tensor {name!r} has dtype {t.dtype}; only float tensors are quantised, pass it in raw=")
    return False


def _quantize(name: str, t: torch.Tensor, quant: QuantConfig, axes: dict[str, int | None]) -> QuantizedTensor:
    axis = axes[name] if name in axes else default_axis(name, t)
    try:
        return quantize(t, quant.bits, axis)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot quantise tensor {name!r}: {e}") from e


def _restore(qt: QuantizedTensor, dtype: torch.dtype) -> torch.Tensor:
    # Same function at encode and decode time, so the two sides agree bit for bit.
    return dequantize(qt).to(dtype)


def quantize_tensors(
    tensors: dict[str, torch.Tensor],
    quant: QuantConfig,
    axes: dict[str, int | None] | None = None,
    *,
    raw: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The tensors :func:`decode_tensors` will return for ``encode_tensors(tensors, quant=quant, ...)``, exactly.

    Use this as the "quantised model" when measuring quality without a byte round trip.
    """
    axes, raw = axes or {}, raw or set()
    out = {}
    for name, t in tensors.items():
        if _check_raw(name, t, raw):
            out[name] = t.detach().cpu().clone()
        else:
            out[name] = _restore(_quantize(name, t, quant, axes), t.dtype)
    return out


def encode_tensors(
    tensors: dict[str, torch.Tensor],
    *,
    quant: QuantConfig,
    meta: dict[str, Any],
    axes: dict[str, int | None] | None = None,
    raw: set[str] | None = None,
) -> bytes:
    """Serialise ``tensors`` into one self-describing, checksummed bitstream (see module docstring).

    Float tensors are quantised to ``quant.bits`` along ``axes.get(name, default_axis(...))`` and entropy-coded
    with ``quant.coder``; tensors named in ``raw`` are stored byte-exact. ``axes`` and ``raw`` are policies: names
    they list that are not in ``tensors`` are ignored. Pruning is the caller's job
    (:func:`builder.codec.quant.prune_global`): ``quant.prune`` is only recorded in the header.
    """
    axes, raw = axes or {}, raw or set()
    table, sections, offset = [], [], 0
    for name, t in tensors.items():
        row: dict[str, Any] = {"name": name, "dtype": _dtype_name(t.dtype), "shape": list(t.shape)}
        if _check_raw(name, t, raw):
            section = _raw_bytes(t)
            row.update(axis=None, bits=None, coder=_RAW, scales=0)
        else:
            qt = _quantize(name, t, quant, axes)
            section = qt.scale.astype("<f4").tobytes() + encode_symbols(qt.q, quant.coder)
            row.update(axis=qt.axis, bits=qt.bits, coder=quant.coder, scales=int(qt.scale.size))
        row.update(offset=offset, length=len(section))
        table.append(row)
        sections.append(section)
        offset += len(section)
    header = {"meta": meta, "quant": quant.to_dict(), "tensors": table}
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serialisable (plain dicts, lists, str, finite numbers): {e}") from e
    body = b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)), header_bytes, *sections])
    return body + hashlib.sha256(body).digest()


def _parse_prefix(blob: bytes) -> int:
    if len(blob) < 4 or blob[:4] != MAGIC:
        raise CorruptBitstream(f"not an NVP bitstream: expected magic {MAGIC!r}, got {bytes(blob[:4])!r}")
    if len(blob) < _PREFIX.size + _DIGEST:
        raise CorruptBitstream(f"bitstream is truncated ({len(blob)} bytes, shorter than the fixed fields)")
    _, version, header_len = _PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(
            f"bitstream format version {version} is not supported; this build reads version {FORMAT_VERSION} "
            "(re-encode the video or use a matching nvp release)"
        )
    return header_len


def decode_tensors(blob: bytes) -> DecodedTensors:
    """Verify and decode a bitstream written by :func:`encode_tensors`."""
    blob = bytes(blob)
    header_len = _parse_prefix(blob)
    body, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptBitstream("checksum mismatch: the file is corrupt or truncated")
    start = _PREFIX.size + header_len
    if start > len(body):
        raise CorruptBitstream("header length points past the end of the bitstream")
    try:
        header = json.loads(body[_PREFIX.size:start].decode("utf-8"))
        quant = QuantConfig.from_dict(header["quant"])
        table, meta = header["tensors"], header["meta"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CorruptBitstream(f"bitstream header is unreadable: {e}") from e
    sections = body[start:]
    tensors: dict[str, torch.Tensor] = {}
    for row in table:
        try:
            tensors[row["name"]] = _decode_row(row, sections)
        except CorruptBitstream:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptBitstream(f"tensor {row.get('name')!r} cannot be decoded: {e}") from e
    return DecodedTensors(tensors=tensors, meta=meta, quant=quant, format_version=FORMAT_VERSION)


def _decode_row(row: dict[str, Any], sections: bytes) -> torch.Tensor:
    offset, length = int(row["offset"]), int(row["length"])
    if offset < 0 or length < 0 or offset + length > len(sections):
        raise CorruptBitstream(f"tensor {row['name']!r}: section lies outside the bitstream")
    data = sections[offset:offset + length]
    dtype, shape = _dtype_from_name(row["dtype"]), tuple(int(d) for d in row["shape"])
    if row["coder"] == _RAW:
        return _raw_tensor(data, dtype, shape)
    n_scales = int(row["scales"])
    scale = np.frombuffer(data, dtype="<f4", count=n_scales).astype(np.float32)
    q = decode_symbols(data[4 * n_scales:], math.prod(shape), row["coder"]).reshape(shape)
    axis = None if row["axis"] is None else int(row["axis"])
    return _restore(QuantizedTensor(q=q, scale=scale, axis=axis, shape=shape, bits=int(row["bits"])), dtype)
