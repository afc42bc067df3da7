"""What every benchmark plot here shares: labels, a light grid, the legend."""
from __future__ import annotations

from typing import Any


def label_axis(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
