"""Implicit neural representations of video: one interface (``INR``), one file per family."""
from .base import INR, BlockInfo, block_info
from .coding import DecodedINR, build_inr, decode_inr, encode_inr, quantize_inr
from .hnerv import HNeRV
from .nerv import NeRV

__all__ = ["INR", "BlockInfo", "block_info", "NeRV", "HNeRV", "build_inr", "encode_inr", "decode_inr",
           "quantize_inr", "DecodedINR"]
