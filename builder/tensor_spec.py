"""One named tensor: name, dtype and shape (``-1``: a batch or otherwise variable dim). Torch-free.

The same concept describes a backbone cut (``Backbone.split(...).cut``: dtypes spelt as torch/numpy name them,
``float32``, ``bool``) and a served model's inputs and outputs (:mod:`builder.triton.specs`: dtypes spelt as Triton's
``model_config.proto`` names them, ``TYPE_FP32``; ``FP32``, ``BYTES`` and ``STRING`` are accepted and normalised). A
spec keeps the spelling it was given in; :data:`DTYPES` relates the spellings, and a spec converts to each one
(:attr:`TensorSpec.torch_dtype`, :attr:`~TensorSpec.numpy_dtype`, :attr:`~TensorSpec.triton_dtype`,
:attr:`~TensorSpec.datatype`). Two specs are equal when they describe the same tensor, whatever the spelling.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

__all__ = ["DTYPES", "DType", "TensorSpec", "dtype_info"]


class DType(NamedTuple):
    name: str  # torch's and numpy's name: "float32"; "string" for text (Triton only)
    triton: str  # model_config.proto DataType name: "TYPE_FP32"
    wire: str  # the inference protocol's name (tritonclient): "FP32"; TYPE_STRING travels as "BYTES"
    numpy: str | None  # numpy dtype name; None where numpy has none (bfloat16)


DTYPES: tuple[DType, ...] = (
    DType("bool", "TYPE_BOOL", "BOOL", "bool"),
    DType("uint8", "TYPE_UINT8", "UINT8", "uint8"),
    DType("uint16", "TYPE_UINT16", "UINT16", "uint16"),
    DType("uint32", "TYPE_UINT32", "UINT32", "uint32"),
    DType("uint64", "TYPE_UINT64", "UINT64", "uint64"),
    DType("int8", "TYPE_INT8", "INT8", "int8"),
    DType("int16", "TYPE_INT16", "INT16", "int16"),
    DType("int32", "TYPE_INT32", "INT32", "int32"),
    DType("int64", "TYPE_INT64", "INT64", "int64"),
    DType("float16", "TYPE_FP16", "FP16", "float16"),
    DType("float32", "TYPE_FP32", "FP32", "float32"),
    DType("float64", "TYPE_FP64", "FP64", "float64"),
    DType("bfloat16", "TYPE_BF16", "BF16", None),
    DType("string", "TYPE_STRING", "BYTES", "object"),
)
_BY_SPELLING: dict[str, DType] = {**{d.name: d for d in DTYPES}, **{d.triton: d for d in DTYPES}}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


def _normalise(dtype: Any) -> str:
    """A dtype's spelling: torch/numpy names as they are (``torch.float32`` -> ``float32``), Triton names as
    ``TYPE_*`` (``FP32``, ``fp32`` -> ``TYPE_FP32``; ``BYTES``, ``STRING`` -> ``TYPE_STRING``)."""
    text = str(dtype).removeprefix("torch.")  # torch.dtype objects, without importing torch
    if text in _BY_SPELLING and not text.isupper():
        return text
    text = text.upper()
    if text in ("BYTES", "STRING"):
        return "TYPE_STRING"
    return text if text.startswith("TYPE_") else f"TYPE_{text}"


def dtype_info(dtype: Any) -> DType:
    """The :data:`DTYPES` row of any spelling (``float32``, ``torch.float32``, ``TYPE_FP32``, ``FP32``)."""
    row = _BY_SPELLING.get(_normalise(dtype))
    if row is None:
        raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(d.name for d in DTYPES)} or "
                         f"{', '.join(d.triton for d in DTYPES)}")
    return row


@dataclass(frozen=True, eq=False)
class TensorSpec:
    """One tensor crossing a boundary (a backbone cut, a served model's input or output)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid tensor name {self.name!r}: use lower_snake names like 'frames'")
        try:
            dtype_info(self.dtype)
        except ValueError as e:
            raise ValueError(f"tensor {self.name!r}: {e}") from None
        object.__setattr__(self, "dtype", _normalise(self.dtype))
        try:
            shape = tuple(int(d) for d in self.shape)
        except TypeError:
            raise ValueError(f"tensor {self.name!r}: shape must be a sequence of ints, got {self.shape!r}") from None
        if any(d == 0 or d < -1 for d in shape):
            raise ValueError(f"tensor {self.name!r}: dims must be positive or -1 (variable), got {list(shape)}")
        object.__setattr__(self, "shape", shape)

    @property
    def info(self) -> DType:
        return dtype_info(self.dtype)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorSpec):
            return NotImplemented
        return (self.name, self.info.name, self.shape) == (other.name, other.info.name, other.shape)

    def __hash__(self) -> int:
        return hash((self.name, self.info.name, self.shape))

    @property
    def triton_dtype(self) -> str:
        """The ``model_config.proto`` name (``TYPE_FP32``), as ``config.pbtxt`` writes it."""
        return self.info.triton

    @property
    def datatype(self) -> str:
        """The wire-protocol name tritonclient uses (``FP32``, ``INT64``, ``BYTES``)."""
        return self.info.wire

    @property
    def numpy_dtype(self) -> str:
        if self.info.numpy is None:
            raise ValueError(f"{self.dtype} has no numpy equivalent")
        return self.info.numpy

    @property
    def torch_dtype(self) -> Any:
        import torch  # only callers that hold torch tensors ask

        if self.info.name == "string":
            raise ValueError(f"{self.dtype} has no torch equivalent")
        return getattr(torch, self.info.name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))
