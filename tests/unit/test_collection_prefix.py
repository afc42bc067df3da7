"""builder/triton/collection_prefix.py: a stored D-NeRV collection's prefix exported to ONNX (parity with PyTorch
through onnxruntime, dynamic batch) and fed by the lookup step; the ONNX features of a member's frames equal what
load_inr's MemberINR gives. Tiny D-NeRV on two real clips, seconds."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from builder.api import load_inr
from builder.collection import KEYFRAMES_FILE
from builder.codec.keyframes import decode_keyframes
from builder.inr import decode_inr
from builder.entry import INR_FILE
from builder.triton.collection_prefix import (PREFIX_INPUTS, PREFIX_OUTPUT, clip_inputs, export_prefix,
                                              gather_frames)
from conftest import tiny_collection

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_collection(tmp_path_factory.mktemp("store"), frames=20)


@pytest.mark.parametrize("exit_block", [1, 2])
def test_onnx_prefix_gives_every_members_features(store, tmp_path, exit_block):
    model = decode_inr(store.get("col", INR_FILE)).model
    err = export_prefix(model, exit_block, tmp_path / "prefix.onnx")
    assert err < 1e-3
    sess = ort.InferenceSession(str(tmp_path / "prefix.onnx"), providers=["CPUExecutionProvider"])
    for member, frames in (("col-0", [19, 0, 3, 9]), ("col-1", [5])):
        keys = decode_keyframes(store.get(member, KEYFRAMES_FILE))
        inputs = clip_inputs(model, keys, 20, frames)
        assert inputs.t.shape == (3 if member == "col-0" else 1, 8)  # clips 2, 0, 1 (each once) / clip 0
        (clip_feats,) = sess.run([PREFIX_OUTPUT], dict(zip(PREFIX_INPUTS, (inputs.t, inputs.keyframes, inputs.dist))))
        got = gather_frames(clip_feats, inputs)
        with torch.no_grad():
            want = load_inr(store, member).model.features(frames, exit_block).numpy()
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


def test_lookup_refuses_frames_out_of_range(store):
    model = decode_inr(store.get("col", INR_FILE)).model
    keys = decode_keyframes(store.get("col-0", KEYFRAMES_FILE))
    with pytest.raises(IndexError, match="out of range"):
        clip_inputs(model, keys, 20, [20])
    with pytest.raises(TypeError, match="integers"):
        clip_inputs(model, keys, 20, [1.5])
    with pytest.raises(IndexError, match="exit block"):
        export_prefix(model, 9, "unused.onnx")
