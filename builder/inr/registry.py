"""INR families by name: ``@register_inr("nerv", config=NeRVConfig, sizing=nerv_config)`` on the model class.

A family is its model class (``from_config``, stored state, training hooks), its config dataclass (fields,
``block_info``), its sizing rule (frames x size + options -> config) and, optionally, its rate sizing (frames x
size x parameter budget -> the largest config of the family's shape that fits; ``builder.inr.rate`` turns bytes
into that budget). Everything else (coding, the store, the
CLI, training) goes through this table, so adding a family is one new file that registers itself (and an import
in ``builder/inr/__init__.py``). Duplicate names are refused, as torchvision's ``register_model`` does.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .base import INR
    from .config import INRConfig

__all__ = ["INRFamily", "register_inr", "get_inr_family", "list_inr_families", "build_inr", "inr_config"]


@dataclass(frozen=True)
class INRFamily:
    name: str
    model: type[INR]
    config: type[INRConfig]
    sizing: Callable[..., INRConfig]  # (frames, height, width, **options) -> config
    # (frames, height, width, max_params, **options) -> the largest config that fits, or None if none does
    for_params: Callable[..., INRConfig | None] | None = None
    # a decoder shared by a collection of videos (D-NeRV): encoded per collection, not by ``encode`` per video
    shared: bool = False

    @property
    def size_options(self) -> tuple[str, ...]:
        """The keyword options the sizing rule accepts (``stem_dim``, ``mlp_dim``, ...)."""
        return _keyword_only(self.sizing)

    @property
    def rate_options(self) -> tuple[str, ...]:
        """The options rate sizing still takes (``num_blocks``, ...); the widths are what it chooses."""
        return _keyword_only(self.for_params) if self.for_params is not None else ()


def _keyword_only(fn: Callable[..., Any]) -> tuple[str, ...]:
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


_FAMILIES: dict[str, INRFamily] = {}


def register_inr(name: str, *, config: type[INRConfig], sizing: Callable[..., INRConfig],
                 for_params: Callable[..., INRConfig | None] | None = None, shared: bool = False):
    """Class decorator registering an INR model class under ``name`` (= its config's ``arch``)."""

    def wrap(model: type[INR]) -> type[INR]:
        if name in _FAMILIES:
            raise ValueError(f"an INR family named {name!r} is already registered ({_FAMILIES[name].model.__name__})")
        if getattr(config, "arch", None) != name:
            raise ValueError(f"{config.__name__}.arch must be {name!r} to register it as {name!r}")
        _FAMILIES[name] = INRFamily(name, model, config, sizing, for_params, shared)
        return model

    return wrap


def list_inr_families(shared: bool | None = None) -> list[str]:
    """Registered names; ``shared=False`` only the per-video families (what ``encode --arch`` takes), ``True``
    only the collection ones."""
    return sorted(k for k, f in _FAMILIES.items() if shared is None or f.shared == shared)


def get_inr_family(name: str) -> INRFamily:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown INR arch {name!r}; registered: {', '.join(list_inr_families())}") from None


def build_inr(config: INRConfig, *, decoder_only: bool = False) -> INR:
    """Instantiate the family of ``config`` (random weights); ``decoder_only`` leaves out what exists only
    while training (HNeRV's encoder)."""
    return get_inr_family(config.arch).model.from_config(config, decoder_only=decoder_only)


def inr_config(arch: str, frames: int, height: int, width: int, **options: Any) -> INRConfig:
    """The family's sizing rule for a clip; ``None`` options fall back to the family's defaults."""
    family = get_inr_family(arch)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - set(family.size_options)
    if unknown:
        raise ValueError(f"{', '.join(sorted(unknown))} do(es) not apply to arch {arch!r}; "
                         f"its options: {', '.join(family.size_options)}")
    return family.sizing(frames, height, width, **options)
