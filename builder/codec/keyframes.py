"""Keyframe compression for D-NeRV members: a real offline codec, at a quality or under a byte target.

The reference codes D-NeRV's keyframes with a learned image codec whose weights cannot be fetched here; these are the
codecs that install offline: WebP, AVIF and JPEG stills through Pillow, and H.264 / H.265 of the keyframe sequence
through PyAV (libx264 / libx265; the keyframes of one video are coded as one short sequence, so later keyframes
are predicted from earlier ones). ``DEFAULT_CODEC`` is the one ``benchmarks/bench_keyframes.py`` measured best
(docs/BENCHMARKS.md, "D-NeRV keyframes").

``quality`` is 0 (smallest) .. 100 (best) for every codec (for the video codecs it maps to CRF ``51 * (1 - q/100)``).
The blob is self-describing: magic, a JSON header (codec, quality, count, size, per-frame lengths) and the payload.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..video import rgb_array, to_uint8

__all__ = ["KEYFRAME_CODECS", "DEFAULT_CODEC", "DEFAULT_QUALITY", "CodedKeyframes", "encode_keyframes",
           "decode_keyframes", "encode_keyframes_under", "available_codecs"]

MAGIC = b"NVKF"
VERSION = 1
_IMAGE = {"webp": "WEBP", "avif": "AVIF", "jpeg": "JPEG"}
_VIDEO = {"h264": "libx264", "h265": "libx265"}
KEYFRAME_CODECS = (*_IMAGE, *_VIDEO)
# measured by benchmarks/bench_keyframes.py (docs/BENCHMARKS.md, "D-NeRV keyframes")
DEFAULT_CODEC = "h264"
DEFAULT_QUALITY = 55  # CRF 23, x264's own default


@dataclass(frozen=True)
class CodedKeyframes:
    blob: bytes
    codec: str
    quality: int
    frames: Tensor  # the decoded keyframes (K, 3, H, W) in [0, 1]: what the decoder is conditioned on

    @property
    def num_bytes(self) -> int:
        return len(self.blob)

    def bpp(self) -> float:
        k, _, h, w = self.frames.shape
        return 8 * len(self.blob) / (k * h * w)


def available_codecs() -> list[str]:
    """The keyframe codecs this installation can encode."""
    from PIL import features

    out = [c for c, fmt in _IMAGE.items() if features.check({"WEBP": "webp", "AVIF": "avif", "JPEG": "jpg"}[fmt])]
    import av

    return out + [c for c, enc in _VIDEO.items() if enc in av.codecs_available]


def _from_uint8(arr: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255


def _encode_images(arr: np.ndarray, codec: str, quality: int) -> list[bytes]:
    from PIL import Image

    out = []
    for frame in arr:
        buf = io.BytesIO()
        opts = {"quality": quality}
        if codec == "webp":
            opts["method"] = 6
        elif codec == "avif":
            opts["speed"] = 4
        Image.fromarray(frame).save(buf, format=_IMAGE[codec], **opts)
        out.append(buf.getvalue())
    return out


def _decode_images(chunks: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(c)).convert("RGB")) for c in chunks])


def _crf(quality: int) -> int:
    return round(51 * (1 - quality / 100))


def _encode_video(arr: np.ndarray, codec: str, quality: int) -> bytes:
    import av

    k, h, w, _ = arr.shape
    ph, pw = h + h % 2, w + w % 2  # 4:2:0 needs even sizes: pad by edge replication, cropped on decode
    if (ph, pw) != (h, w):
        arr = np.pad(arr, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream(_VIDEO[codec], rate=1)
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        opts = {"crf": str(_crf(quality)), "preset": "slow"}
        if codec == "h265":
            opts["x265-params"] = "log-level=error"
        stream.options = opts
        for frame in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _decode_video(payload: bytes, k: int, h: int, w: int) -> np.ndarray:
    import av

    with av.open(io.BytesIO(payload)) as src:
        frames = [rgb_array(f)[:h, :w] for f in src.decode(video=0)]
    if len(frames) != k:
        raise ValueError(f"keyframe stream holds {len(frames)} frames, expected {k}")
    return np.stack(frames)


def encode_keyframes(frames: Tensor, codec: str = DEFAULT_CODEC, quality: int = DEFAULT_QUALITY) -> CodedKeyframes:
    """Code ``frames`` ``(K, 3, H, W)`` in [0, 1]; returns the blob and the decoded keyframes."""
    if codec not in KEYFRAME_CODECS:
        raise ValueError(f"keyframe codec must be one of {KEYFRAME_CODECS}, got {codec!r}")
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in 0..100, got {quality}")
    arr = to_uint8(frames)
    k, h, w, _ = arr.shape
    if codec in _IMAGE:
        chunks = _encode_images(arr, codec, quality)
        payload, lengths = b"".join(chunks), [len(c) for c in chunks]
    else:
        payload, lengths = _encode_video(arr, codec, quality), [0]
    header = json.dumps({"codec": codec, "quality": quality, "count": k, "height": h, "width": w,
                         "lengths": lengths}, separators=(",", ":")).encode()
    blob = MAGIC + struct.pack("<BI", VERSION, len(header)) + header + payload
    return CodedKeyframes(blob, codec, quality, decode_keyframes(blob))


def decode_keyframes(blob: bytes) -> Tensor:
    """The keyframes ``(K, 3, H, W)`` in [0, 1] of a blob from :func:`encode_keyframes`."""
    if blob[:4] != MAGIC:
        raise ValueError("not a keyframe blob (bad magic)")
    version, n = struct.unpack("<BI", blob[4:9])
    if version != VERSION:
        raise ValueError(f"unsupported keyframe blob version {version}")
    meta = json.loads(blob[9:9 + n])
    payload = blob[9 + n:]
    if meta["codec"] in _IMAGE:
        chunks, at = [], 0
        for length in meta["lengths"]:
            chunks.append(payload[at:at + length])
            at += length
        arr = _decode_images(chunks)
    else:
        arr = _decode_video(payload, meta["count"], meta["height"], meta["width"])
    return _from_uint8(arr)


def encode_keyframes_under(frames: Tensor, max_bytes: int, codec: str = DEFAULT_CODEC) -> CodedKeyframes:
    """The best quality of ``codec`` whose blob fits ``max_bytes`` (binary search over quality 0..100);
    ``ValueError`` when even quality 0 does not fit."""
    lo, hi, best = 0, 100, None
    while lo <= hi:
        mid = (lo + hi) // 2
        coded = encode_keyframes(frames, codec, mid)
        if coded.num_bytes <= max_bytes:
            best, lo = coded, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(f"{codec} keyframes do not fit {max_bytes} bytes even at quality 0")
    return best
