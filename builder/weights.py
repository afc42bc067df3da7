"""Where pretrained weight files live on this machine, and the error that says where to put them.

Nothing here downloads. ``weights="default"`` is resolved, in order, against:

1. ``$NVP_WEIGHTS_DIR/<file name>`` (default ``~/.cache/nvp/weights/``), the project's own place;
2. the offline cache the upstream library itself would have filled on a machine with internet:
   ``$TORCH_HOME/hub/checkpoints/<official file name>`` (torch hub, also used by pytorchvideo),
   ``~/.cache/clip/<file>`` (OpenAI CLIP), the Hugging Face cache (``huggingface_hub`` with
   ``local_files_only=True``), or a file that ships inside an installed package.

When none exists :class:`WeightsNotFound` names the file, the directory to put it in, and the
official URL to fetch it from elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "WeightsNotFound",
    "WeightsSpec",
    "weights_dir",
    "torch_hub_checkpoint",
    "hf_cached_file",
    "resolve_weights",
]

ENV_VAR = "NVP_WEIGHTS_DIR"
DEFAULT_DIR = "~/.cache/nvp/weights"


class WeightsNotFound(FileNotFoundError):
    """A pretrained weight file (or model directory) is not on this machine."""


def weights_dir() -> Path:
    """``$NVP_WEIGHTS_DIR``, or ``~/.cache/nvp/weights`` when unset."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR).expanduser()


def torch_hub_checkpoint(filename: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``filename`` (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of ``repo_id`` from the local Hugging Face cache, or None; never touches the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


@dataclass(frozen=True)
class WeightsSpec:
    """Which file a backbone needs and where else it may already be.

    ``filename`` is looked up in :func:`weights_dir`; ``fallbacks`` are callables returning other
    candidate paths (library caches), tried in order. ``is_dir`` marks a model *directory*
    (Hugging Face ``save_pretrained`` layout) rather than a single file.
    """

    filename: str
    url: str
    description: str
    fallbacks: tuple[Callable[[], Path | None], ...] = field(default=(), compare=False)
    fallback_hint: str = ""
    is_dir: bool = False
    required: tuple[str, ...] = ()  # files a directory must contain

    def candidates(self) -> list[Path]:
        out = [weights_dir() / self.filename]
        for fn in self.fallbacks:
            p = fn()
            if p is not None:
                out.append(Path(p))
        return out

    def _ok(self, p: Path) -> bool:
        if self.is_dir:
            return p.is_dir() and all((p / r).is_file() for r in self.required)
        return p.is_file()

    def not_found(self, tried: Sequence[Path], explicit: bool = False) -> WeightsNotFound:
        kind = "directory" if self.is_dir else "file"
        target = weights_dir() / self.filename
        lines = [f"{self.description}: weights {kind} not found."]
        lines.append("Looked at: " + ", ".join(str(p) for p in tried) + ".")
        if not explicit:
            lines.append(f"Put the {kind} at {target} (set {ENV_VAR} to use another directory than {weights_dir()}).")
            if self.is_dir and self.required:
                lines.append(f"The directory must contain: {', '.join(self.required)}.")
        lines.append(f"Get it on a machine with internet from: {self.url}")
        if self.fallback_hint:
            lines.append(self.fallback_hint)
        return WeightsNotFound("\n".join(lines))


def resolve_weights(spec: WeightsSpec, weights: str | os.PathLike[str] | None = "default") -> Path:
    """Path of the weights to load: an explicit path, or the first existing default candidate.

    Raises :class:`WeightsNotFound` with a message naming the file, where to put it and its official URL.
    """
    if weights is None or (isinstance(weights, str) and weights == "default"):
        tried = spec.candidates()
        for p in tried:
            if spec._ok(p):
                return p
        raise spec.not_found(tried)
    p = Path(weights).expanduser()
    if spec._ok(p):
        return p
    raise spec.not_found([p], explicit=True)
