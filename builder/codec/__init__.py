"""Turn a dict of float tensors into bytes and back, bit-exactly: quantisation, entropy coding, the container."""
from builder.codec.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    CorruptBitstream,
    DecodedTensors,
    UnsupportedVersion,
    decode_tensors,
    encode_tensors,
    quantize_tensors,
)
from builder.codec.entropy import CODERS, decode_symbols, encode_symbols
from builder.codec.quant import (
    QuantizedTensor,
    default_axis,
    dequantize,
    fake_quantize,
    prune_global,
    quantize,
    ste_quantize,
    step_size,
)

__all__ = [
    "CODERS",
    "FORMAT_VERSION",
    "MAGIC",
    "CorruptBitstream",
    "DecodedTensors",
    "QuantizedTensor",
    "UnsupportedVersion",
    "decode_symbols",
    "decode_tensors",
    "default_axis",
    "dequantize",
    "encode_symbols",
    "encode_tensors",
    "fake_quantize",
    "prune_global",
    "quantize",
    "quantize_tensors",
    "ste_quantize",
    "step_size",
]
