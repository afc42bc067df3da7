"""One tensor-spec concept for backbone cuts and served models: spellings, equality and conversions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tritonclient.grpc import model_config_pb2 as mc

from builder.tensor_spec import DTYPES, TensorSpec, dtype_info
from builder.triton.pbtxt import to_model_config
from builder.triton.specs import PythonModelSpec


def test_each_spelling_is_kept_and_means_the_same_tensor():
    cut = TensorSpec("features", torch.float32, (-1, 40, 7, 7))  # as Backbone.split writes it
    served = TensorSpec("features", "TYPE_FP32", (-1, 40, 7, 7))
    assert cut.dtype == "float32" and served.dtype == "TYPE_FP32"
    assert cut == served and hash(cut) == hash(served)
    assert cut != TensorSpec("features", "float16", (-1, 40, 7, 7))
    assert cut != TensorSpec("features", "float32", (-1, 40, 7, 1))
    assert TensorSpec("x", "fp32", (1,)).dtype == "TYPE_FP32"
    assert TensorSpec("x", "STRING", (1,)).dtype == "TYPE_STRING"


def test_conversions():
    spec = TensorSpec("mask", torch.bool, (-1, 7, 7))
    assert (spec.torch_dtype, spec.numpy_dtype, spec.triton_dtype, spec.datatype) == (
        torch.bool, "bool", "TYPE_BOOL", "BOOL")
    text = TensorSpec("labels", "BYTES", (-1,))
    assert (text.numpy_dtype, text.triton_dtype, text.datatype) == ("object", "TYPE_STRING", "BYTES")
    with pytest.raises(ValueError, match="no torch equivalent"):
        text.torch_dtype
    with pytest.raises(ValueError, match="no numpy equivalent"):
        TensorSpec("x", torch.bfloat16, (1,)).numpy_dtype
    for row in DTYPES:  # every row converts both ways
        assert dtype_info(row.name) == dtype_info(row.triton) == row
        if row.numpy is not None:
            np.dtype(row.numpy)
        if row.name != "string":
            assert isinstance(getattr(torch, row.name), torch.dtype)


def test_a_backbone_cut_spec_goes_straight_into_a_model_config(tmp_path):
    cut = TensorSpec("features", "float32", (40, -1, -1))
    cfg = to_model_config(PythonModelSpec(name="m", inputs=(cut,), outputs=(TensorSpec("y", "int64", (1,)),),
                                          source=tmp_path / "model.py"))
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in cfg.input] == [
        ("features", "TYPE_FP32", [40, -1, -1])]
    assert mc.DataType.Name(cfg.output[0].data_type) == "TYPE_INT64"


def test_round_trip_and_validation():
    spec = TensorSpec("frames", "float32", (-1, 3, -1, -1))
    assert TensorSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["dtype"] == "float32"
    for bad in [("frames", "float", (1,)), ("frames", "float32", (0,)), ("1frames", "float32", (1,))]:
        with pytest.raises(ValueError):
            TensorSpec(*bad)
