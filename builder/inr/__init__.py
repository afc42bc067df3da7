"""Implicit neural representations of video: one interface (``INR``), one registered file per family.

Importing this package registers the families below; ``get_inr_family(arch)`` / ``build_inr(config)`` /
``INRConfig.from_dict(d)`` find them by name.
"""
from .base import INR
from .coding import DecodedINR, decode_inr, encode_inr, quantize_inr
from .config import BlockInfo, INRConfig, choose_layout, seed_size_rule
from .chunked import ChunkedINR, chunk_plan, decode_chunked
from .registry import INRFamily, build_inr, get_inr_family, inr_config, list_inr_families, register_inr

# the families: each registers itself on import
from .dnerv import DNeRV, DNeRVConfig, dnerv_config  # noqa: E402,F401  (isort: skip)
from .hnerv import HNeRV, HNeRVConfig, hnerv_config  # noqa: E402  (isort: skip)
from .nerv import NeRV, NeRVConfig, nerv_config  # noqa: E402  (isort: skip)

__all__ = ["INR", "INRConfig", "BlockInfo", "INRFamily", "register_inr", "get_inr_family", "list_inr_families",
           "build_inr", "inr_config", "choose_layout", "seed_size_rule", "NeRV", "NeRVConfig", "nerv_config",
           "HNeRV", "HNeRVConfig", "hnerv_config", "encode_inr", "decode_inr", "quantize_inr", "DecodedINR",
           "ChunkedINR", "chunk_plan", "decode_chunked"]
