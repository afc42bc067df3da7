"""Keyframe codec (builder/codec/keyframes.py): every installed codec round-trips real keyframes."""
from __future__ import annotations

import pytest
import torch

from builder.codec.keyframes import (DEFAULT_CODEC, KEYFRAME_CODECS, available_codecs, decode_keyframes,
                                     encode_keyframes, encode_keyframes_under)
from builder.samples import sample_path
from builder.video import read_video
from training.metrics import psnr


@pytest.fixture(scope="module")
def keys():
    # 3 keyframes (8 frames apart) of an odd size: 4:2:0 video codecs must pad and crop
    return read_video(sample_path("carphone"), count=17, size=(61, 45)).frames[::8]


def test_default_is_installed():
    assert DEFAULT_CODEC in available_codecs()
    assert set(available_codecs()) <= set(KEYFRAME_CODECS)


@pytest.mark.parametrize("codec", KEYFRAME_CODECS)
def test_round_trip(codec, keys):
    if codec not in available_codecs():
        pytest.skip(f"{codec} does not install here")
    hi, lo = encode_keyframes(keys, codec, 90), encode_keyframes(keys, codec, 20)
    for coded in (hi, lo):
        assert coded.frames.shape == keys.shape
        assert torch.equal(decode_keyframes(coded.blob), coded.frames)  # the blob decodes to what was reported
    assert lo.num_bytes < hi.num_bytes
    assert psnr(hi.frames, keys) > 30 and psnr(hi.frames, keys) > psnr(lo.frames, keys)


def test_byte_target(keys):
    full = encode_keyframes(keys, "webp", 100).num_bytes
    coded = encode_keyframes_under(keys, full // 3, "webp")
    assert coded.num_bytes <= full // 3
    assert encode_keyframes(keys, "webp", min(coded.quality + 1, 100)).num_bytes > full // 3 or coded.quality == 100
    with pytest.raises(ValueError):
        encode_keyframes_under(keys, 10, "webp")


def test_rejects_bad_input(keys):
    with pytest.raises(ValueError):
        decode_keyframes(b"XXXX" + b"\0" * 20)
    with pytest.raises(ValueError):
        encode_keyframes(keys, "png")
    with pytest.raises(ValueError):
        encode_keyframes(keys[:, :1], "webp")
