"""The neural-centric path and what builds it, one module per responsibility:

- :mod:`.path`: INR decoder prefix (exit block k) -> adapters -> backbone tail (after layer l)
- :mod:`.storage`: adapters and pairings in the video store
- :mod:`.measure`: one path's scores, GFLOPs and ms per frame on the task's protocol frames
- :mod:`.search`: ``adapt`` (rank pairs by CKA, fit adapters, measure, select by measurement, store)
- :mod:`.evaluate`: ``evaluate`` (raw, codec, fulldecode and NVP paths) and its plot

Serving imports only ``path`` and ``storage``. The names below are imported lazily, so importing one module does
not pull in the others (``search`` needs ``training``).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "inr_features": "path", "AdapterSet": "path", "DerivedMask": "path", "NVPPath": "path",
    "adapter_file": "storage", "pairing_file": "storage", "stored_exits": "storage", "save_adapter": "storage",
    "load_adapter": "storage", "load_pairing": "storage",
    "adapt_video": "search", "pareto_front": "search", "select_pair": "search",
    "evaluate_task": "evaluate", "plot_exits": "evaluate", "TIMING": "evaluate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'builder.nvp' has no attribute {name!r}")
