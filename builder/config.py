"""The codec's configuration: how an INR is turned into bytes (embedded in every bitstream header).

INR architectures are configured per family (``builder.inr``: ``INRConfig`` and its subclasses); training
settings live with the loops (``training.config``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from training.config import dataclass_from_dict

__all__ = ["QuantConfig"]


@dataclass(frozen=True)
class QuantConfig:
    """How an INR is turned into bytes: pruning, quantisation, entropy coding."""

    bits: int = 8
    prune: float = 0.0  # fraction of conv/linear weights zeroed by global magnitude pruning
    coder: str = "ans"  # "ans" (constriction, near-entropy) or "zlib" (baseline)

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bits must be in [2, 16], got {self.bits}")
        if not 0.0 <= self.prune < 1.0:
            raise ValueError(f"prune must be in [0, 1), got {self.prune}")
        if self.coder not in ("ans", "zlib"):
            raise ValueError(f"coder must be 'ans' or 'zlib', got {self.coder!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        return dataclass_from_dict(cls, d)
