"""Lossless coding of integer symbol arrays.

``"ans"``: ANS from ``constriction`` with an i.i.d. model of the array's own symbol distribution, so the size
approaches the zeroth-order entropy. ``"zlib"``: deflate on the narrowest integer dtype (the baseline).

"ans" layout (little-endian)::

    mode u8 | min symbol i32 | bins u32 | model table (depends on mode) | ANS words u32...

The encoder tries several models and writes whichever stream is smallest:

- mode 0, constant: at most one distinct symbol; no table, no words.
- mode 1, exact histogram: one LEB128 varint count per bin. Best for large tensors.
- mode 2, uniform over the range: no table. Small tensors with wide ranges (biases).
- mode 3, coarse histogram: level ``1 + round(4 * log2(count))`` per bin (0 = empty), deflated byte deltas.
  ~0.002 bit/symbol of mismatch for a ~4x smaller table; mid-sized tensors.
- mode 4, parametric: ``center i32 | power u8 | r f64``, weights ``r ** (|k - center| ** power)``: a discrete
  Laplace (power 1) or Gaussian (power 2). 13 bytes of table; small bell-shaped tensors.

Decoders rebuild every model with integer ops or IEEE multiplications only (no exp/log/pow), so a different libm
on the decoding machine cannot desynchronise the coder.

"zlib" layout: ``width u8`` (1, 2 or 4 bytes per symbol) then the deflate stream of little-endian symbols.
"""
from __future__ import annotations

import math
import struct
import zlib

import constriction
import numpy as np

__all__ = ["CODERS", "decode_symbols", "encode_symbols"]

CODERS = ("ans", "zlib")

_HEAD = struct.Struct("<BiI")
_PARAMETRIC = struct.Struct("<iBd")
_CONSTANT, _HISTOGRAM, _UNIFORM, _LOG_HISTOGRAM, _GEOMETRIC = 0, 1, 2, 3, 4
_LOG_MANTISSA = (256, 304, 362, 431)  # round(256 * 2 ** (j / 4)): level -> weight without pow() at decode time
_TINY = 1e-200  # parametric weights below this are 0 (constriction still gives them the minimum probability)
# constriction's models use 24-bit fixed-point probabilities; keep the alphabet well inside that.
_MAX_BINS = 1 << 20


def _check_coder(coder: str) -> None:
    if coder not in CODERS:
        raise ValueError(f"unknown entropy coder {coder!r}; choose one of {CODERS}")


def encode_symbols(q: np.ndarray, coder: str) -> bytes:
    """Encode the integer array ``q`` (flattened, C order) losslessly; the caller stores the count."""
    _check_coder(coder)
    q = np.asarray(q)
    if q.size and not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"symbols must be integers, got {q.dtype}")
    flat = q.reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < np.iinfo(np.int32).min or flat.max() > np.iinfo(np.int32).max):
        raise ValueError("symbols must fit in int32")
    flat = flat.astype(np.int32)
    return _ans_encode(flat) if coder == "ans" else _zlib_encode(flat)


def decode_symbols(data: bytes, count: int, coder: str) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: a flat int32 array of ``count`` symbols."""
    _check_coder(coder)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    out = _ans_decode(bytes(data), count) if coder == "ans" else _zlib_decode(bytes(data), count)
    if out.size != count:
        raise ValueError(f"decoded {out.size} symbols, expected {count}")
    return out


# --- ans models -------------------------------------------------------------------------------------------------


def _varints(values: list[int]) -> bytes:
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(data: bytes, pos: int, n: int) -> tuple[list[int], int]:
    values = []
    for _ in range(n):
        v = shift = 0
        while True:
            if pos >= len(data):
                raise ValueError("histogram is truncated")
            b = data[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        values.append(v)
    return values, pos


def _log_levels(counts: np.ndarray) -> np.ndarray:
    levels = np.zeros(counts.size, dtype=np.int64)
    nz = counts > 0
    levels[nz] = 1 + np.rint(4 * np.log2(counts[nz])).astype(np.int64)
    return levels


def _log_weights(levels: np.ndarray) -> np.ndarray:
    levels = levels.astype(np.int64)
    mantissa = np.asarray(_LOG_MANTISSA, dtype=np.int64)[(levels - 1) % 4]
    return np.where(levels > 0, mantissa << ((levels - 1) // 4), 0)


def _pack_levels(levels: np.ndarray) -> bytes:
    # Neighbouring levels differ little, so their deltas (mod 256; levels are <= 129) deflate well.
    return zlib.compress((np.diff(levels, prepend=0) % 256).astype(np.uint8).tobytes(), 9)


def _unpack_levels(data: bytes, pos: int, bins: int) -> tuple[np.ndarray, int]:
    inflate = zlib.decompressobj()
    deltas = inflate.decompress(data[pos:], bins)
    if len(deltas) != bins or not inflate.eof:
        raise ValueError("histogram is truncated")
    levels = np.cumsum(np.frombuffer(deltas, dtype=np.uint8).astype(np.int64)) % 256
    return levels, len(data) - len(inflate.unused_data)


def _geometric_weights(bins: int, center: int, power: int, r: float) -> np.ndarray:
    """``r ** (|k - center| ** power)`` by repeated IEEE multiplication only (bit-identical on every machine)."""
    w = [0.0] * bins
    w[center] = 1.0
    r2 = r * r
    for direction in (1, -1):
        value, step, k = 1.0, r, center + direction
        while 0 <= k < bins:
            value *= step
            if value < _TINY:
                break
            w[k] = value
            if power == 2:  # r^((k+1)^2) = r^(k^2) * r^(2k+1)
                step *= r2
            k += direction
    return np.asarray(w, dtype=np.float64)


def _fit_geometric(shifted: np.ndarray, power: int) -> tuple[int, float]:
    """Moment fit of the parametric model (encoder only, so floating-point libm calls are fine here)."""
    x = shifted.astype(np.float64)
    if power == 1:
        center = int(np.median(shifted))
        m = max(float(np.abs(x - center).mean()), 1e-6)
        r = (math.sqrt(1.0 + m * m) - 1.0) / m  # solves E|k| = 2r / (1 - r^2) for a two-sided geometric
    else:
        center = int(np.rint(x.mean()))
        var = max(float(((x - center) ** 2).mean()), 1e-6)
        r = math.exp(-0.5 / var)
    return center, min(max(r, 1e-12), 1.0 - 1e-12)


def _categorical(weights: np.ndarray):
    # Weights are exact float64 values, so encoder and decoder build the identical fixed-point model.
    return constriction.stream.model.Categorical(np.asarray(weights, dtype=np.float64), perfect=False)


def _ans_words(symbols: np.ndarray, model) -> bytes:
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, model)
    return coder.get_compressed().astype("<u4").tobytes()


# --- ans --------------------------------------------------------------------------------------------------------


def _ans_encode(flat: np.ndarray) -> bytes:
    if flat.size == 0:
        return _HEAD.pack(_CONSTANT, 0, 0)
    lo, hi = int(flat.min()), int(flat.max())
    bins = hi - lo + 1
    if bins == 1:
        return _HEAD.pack(_CONSTANT, lo, 1)
    if bins > _MAX_BINS:
        raise ValueError(f"symbol range {bins} is too wide for the 'ans' coder (max {_MAX_BINS}); use 'zlib'")
    shifted = flat - np.int32(lo)
    counts = np.bincount(shifted, minlength=bins)
    levels = _log_levels(counts)
    candidates = [
        (_HISTOGRAM, _varints(counts.tolist()), counts),
        (_LOG_HISTOGRAM, _pack_levels(levels), _log_weights(levels)),
    ]
    for power in (1, 2):
        center, r = _fit_geometric(shifted, power)
        candidates.append((_GEOMETRIC, _PARAMETRIC.pack(center, power, r), _geometric_weights(bins, center, power, r)))
    best = b""
    for mode, table, weights in candidates:
        blob = _HEAD.pack(mode, lo, bins) + table + _ans_words(shifted, _categorical(weights))
        if not best or len(blob) < len(best):
            best = blob
    # A uniform model needs no table; only try it when its size estimate could win.
    if flat.size * math.log2(bins) / 8 + 16 < len(best):
        uniform = _HEAD.pack(_UNIFORM, lo, bins) + _ans_words(shifted, constriction.stream.model.Uniform(bins))
        if len(uniform) < len(best):
            best = uniform
    return best


def _ans_decode(data: bytes, count: int) -> np.ndarray:
    if len(data) < _HEAD.size:
        raise ValueError("ans stream is shorter than its header")
    mode, lo, bins = _HEAD.unpack_from(data)
    pos = _HEAD.size
    if mode == _CONSTANT:
        if bins == 0 and count:
            raise ValueError(f"empty ans stream but {count} symbols expected")
        return np.full(count, lo, dtype=np.int32)
    if not 2 <= bins <= _MAX_BINS:
        raise ValueError(f"ans stream has an invalid alphabet size {bins}")
    if mode == _HISTOGRAM:
        counts, pos = _read_varints(data, pos, bins)
        model = _categorical(np.asarray(counts, dtype=np.float64))
    elif mode == _LOG_HISTOGRAM:
        levels, pos = _unpack_levels(data, pos, bins)
        model = _categorical(_log_weights(levels))
    elif mode == _GEOMETRIC:
        if len(data) < pos + _PARAMETRIC.size:
            raise ValueError("parametric model is truncated")
        center, power, r = _PARAMETRIC.unpack_from(data, pos)
        pos += _PARAMETRIC.size
        if not (0 <= center < bins and power in (1, 2) and 0.0 < r < 1.0):
            raise ValueError("parametric model has invalid parameters")
        model = _categorical(_geometric_weights(bins, center, power, r))
    elif mode == _UNIFORM:
        model = constriction.stream.model.Uniform(bins)
    else:
        raise ValueError(f"unknown ans mode {mode}")
    if (len(data) - pos) % 4:
        raise ValueError("ans payload is not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4", offset=pos).astype(np.uint32)
    symbols = constriction.stream.stack.AnsCoder(words).decode(model, count)
    return (symbols.astype(np.int64) + lo).astype(np.int32)


# --- zlib -------------------------------------------------------------------------------------------------------


def _zlib_encode(flat: np.ndarray) -> bytes:
    width = 4
    if flat.size == 0 or (flat.min() >= -(1 << 7) and flat.max() < (1 << 7)):
        width = 1
    elif flat.min() >= -(1 << 15) and flat.max() < (1 << 15):
        width = 2
    return bytes([width]) + zlib.compress(flat.astype(f"<i{width}").tobytes(), 9)


def _zlib_decode(data: bytes, count: int) -> np.ndarray:
    if not data or data[0] not in (1, 2, 4):
        raise ValueError("zlib stream has no valid symbol width byte")
    raw = zlib.decompress(data[1:])
    return np.frombuffer(raw, dtype=f"<i{data[0]}").astype(np.int32)
