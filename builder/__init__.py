"""NVP builder: videos stored as implicit neural representations (NeRV, HNeRV), read through their decoder's
intermediate features. Public API (imported lazily so ``python -m builder --help`` stays fast)."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QuantConfig": "config", "INRConfig": "inr", "inr_config": "inr", "register_inr": "inr",
    "list_inr_families": "inr", "get_inr_family": "inr",
    "INR": "inr", "NeRV": "inr", "HNeRV": "inr", "build_inr": "inr", "encode_inr": "inr", "decode_inr": "inr",
    "VideoStore": "store", "read_video": "video", "write_video": "video",
    "get_backbone": "backbones", "list_backbones": "backbones", "build_adapter": "adapters",
    "RepositoryBuilder": "triton", "adapt_video": "nvp", "evaluate_task": "nvp",
    "encode_video": "api", "load_inr": "api", "decode_video": "api", "eval_video": "api", "cost_table": "api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'builder' has no attribute {name!r}")
