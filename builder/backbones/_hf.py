"""Shared bits of the Hugging Face families: finding a model directory offline and loading it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..weights import WeightsSpec, hf_cached_file

__all__ = ["WEIGHT_FILES", "cached_model_dir", "from_pretrained_local", "hf_weights_spec"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def cached_model_dir(repo_id: str) -> Path | None:
    """Snapshot directory of ``repo_id`` in the local HF cache when config and weights are both there."""
    cfg = hf_cached_file(repo_id, "config.json")
    if cfg is None:
        return None
    if any(hf_cached_file(repo_id, w) is not None for w in WEIGHT_FILES):
        return cfg.parent
    return None


def from_pretrained_local(cls: Any, path: Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` on a local directory, never reaching the network."""
    if not any((path / w).is_file() for w in WEIGHT_FILES):
        from ..weights import WeightsNotFound

        raise WeightsNotFound(f"{path} has a config.json but no weights file ({' or '.join(WEIGHT_FILES)})")
    model, info = cls.from_pretrained(str(path), local_files_only=True, output_loading_info=True, **kwargs)
    bad = {k: info.get(k) for k in ("missing_keys", "mismatched_keys") if info.get(k)}
    if bad:  # from_pretrained only logs these; a half-random model must not pass for a pretrained one
        raise RuntimeError(f"{cls.__name__} weights in {path} do not match the architecture: {bad}")
    if info.get("unexpected_keys"):
        warnings.warn(f"{cls.__name__}: unused keys in {path}: {sorted(info['unexpected_keys'])[:10]}", stacklevel=2)
    return model


def hf_weights_spec(repo_id: str, dirname: str, description: str) -> WeightsSpec:
    """Weights of a transformers model: a local directory ``dirname`` (as ``huggingface-cli download`` writes it),
    else the Hugging Face cache of ``repo_id`` (offline)."""
    return WeightsSpec(
        filename=dirname,
        url=f"https://huggingface.co/{repo_id} (e.g. `huggingface-cli download {repo_id} --local-dir {dirname}`)",
        description=description,
        fallbacks=(lambda: cached_model_dir(repo_id),),
        fallback_hint=f"The Hugging Face cache of {repo_id} is used too (HF_HUB_OFFLINE=1).",
        is_dir=True,
        required=("config.json",),
    )
