"""What every INR family's config shares: the decoder geometry, its static cost rows, the layout rules.

Each family subclasses :class:`INRConfig` in its own file with its own fields and ``block_info``; a stored dict
(bitstream header, store metadata) is turned back into the right subclass through the registry by its ``arch``.
No torch here: configs are read by the store and the CLI without building a model.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ClassVar

from .registry import get_inr_family

__all__ = ["INRConfig", "BlockInfo", "conv_flops", "conv_params", "choose_layout", "seed_size_rule",
           "default_num_blocks", "widest"]

ACTIVATIONS = ("relu", "gelu", "silu", "leaky_relu")
NORMS = ("instance", "none")

# Stored order of the shared fields: ``arch``, the geometry, then the family's own fields, then the style fields
# (the order format-1 headers were written in; the JSON header is byte-compared by tests/data/inr_golden).
_GEOMETRY = ("frames", "out_height", "out_width", "height", "width", "strides", "channels", "kernels",
             "stem_channels")
_STYLE = ("activation", "norm", "head_kernel", "out_act")


@dataclass(frozen=True)
class BlockInfo:
    """Static description of one stage; known from the config alone, without running the model.

    ``gflops`` counts conv/matmul multiply-adds x 2 per frame (as ``torch.utils.flop_counter`` does);
    ``params`` are the stored parameters of the stage. ``exit`` is the exit-block number whose features are this
    stage's output (0 = stem, k = decoder block k), ``None`` for stages that are no exit (embeddings, head).
    """

    name: str
    out_channels: int
    out_height: int
    out_width: int
    kernel: int
    stride: int
    params: int
    gflops: float
    exit: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.out_channels, self.out_height, self.out_width

    def to_dict(self) -> dict:
        return asdict(self)


def conv_flops(cin: int, cout: int, k: int, h: int, w: int) -> float:
    """FLOPs of a stride-1, same-padded k x k conv on an h x w map (2 x MACs, bias excluded)."""
    return 2.0 * cin * cout * k * k * h * w


def conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


@dataclass(frozen=True)
class INRConfig:
    """Architecture of one video's INR: ``stem -> block 1 .. block n -> head`` on a ``height x width`` canvas.

    The canvas is ``grid * prod(strides)``; when the source size is not a multiple of the stride product it is
    larger and ``forward`` crops the top-left ``out_height x out_width`` region (see :func:`choose_layout`).
    Subclasses (one per family) add their fields and set ``arch``; ``INRConfig.from_dict`` picks the subclass by
    the dict's ``arch`` through the registry.
    """

    arch: ClassVar[str]
    # Format-1 headers (2026) held the union of the NeRV and HNeRV fields. ``stored_layout`` lists the family
    # block of the stored dict in order and ``stored_constants`` the keys in it that are not this family's
    # fields (written with these values, and accepted on load only with them). New families leave both empty.
    stored_layout: ClassVar[tuple[str, ...]] = ()
    stored_constants: ClassVar[dict[str, Any]] = {}

    frames: int
    out_height: int
    out_width: int
    height: int
    width: int
    strides: tuple[int, ...]
    channels: tuple[int, ...]  # output channels of each decoder block
    kernels: tuple[int, ...]  # conv kernel size of each decoder block
    stem_channels: int  # channels of the initial feature map (NeRV's fc_dim, the seed's "stem dim")
    activation: str = "relu"
    norm: str = "instance"
    head_kernel: int = 1
    out_act: str = "tanh"  # "tanh" -> (tanh + 1) / 2 as NeRV, or "sigmoid"

    def __post_init__(self) -> None:
        if type(self) is INRConfig:
            raise TypeError("INRConfig is the shared base: build a family's config (or INRConfig.from_dict)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.out_act not in ("tanh", "sigmoid"):
            raise ValueError(f"out_act must be 'tanh' or 'sigmoid', got {self.out_act!r}")
        if self.frames < 1:
            raise ValueError("frames must be >= 1")
        if not (len(self.strides) == len(self.channels) == len(self.kernels)) or not self.strides:
            raise ValueError("strides, channels and kernels need one entry per block")
        p = math.prod(self.strides)
        if self.height % p or self.width % p:
            raise ValueError(f"canvas {self.width}x{self.height} is not a multiple of the stride product {p}")
        if self.out_height > self.height or self.out_width > self.width:
            raise ValueError("output size larger than the decoder canvas")
        if any(k % 2 == 0 for k in self.kernels) or self.head_kernel % 2 == 0:
            raise ValueError("kernel sizes must be odd")

    @property
    def num_blocks(self) -> int:
        return len(self.strides)

    @property
    def stored_params(self) -> int:
        """Parameters the bitstream holds (decoder weights, and per-frame embeddings where the family has them)."""
        return sum(r.params for r in self.block_info())

    @property
    def grid(self) -> tuple[int, int]:
        p = math.prod(self.strides)
        return self.height // p, self.width // p

    # --- to implement per family -------------------------------------------------------------------------------
    def stem_info(self) -> list[BlockInfo]:
        """The rows before the decoder blocks (the stem, with ``exit=0``, and anything stored ahead of it)."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------------
    def block_info(self) -> list[BlockInfo]:
        """The family's stem rows, each decoder block (NeRV block: conv -> PixelShuffle -> norm -> act) and the
        RGB head."""
        rows = self.stem_info()
        cin, (h, w) = self.stem_channels, self.grid
        for i, (s, c, k) in enumerate(zip(self.strides, self.channels, self.kernels), start=1):
            params = conv_params(cin, c * s * s, k) + (2 * c if self.norm == "instance" else 0)
            flops = conv_flops(cin, c * s * s, k, h, w)
            h, w, cin = h * s, w * s, c
            rows.append(BlockInfo(f"block{i}", c, h, w, k, s, params, flops / 1e9, exit=i))
        rows.append(BlockInfo("head", 3, self.out_height, self.out_width, self.head_kernel, 1,
                              conv_params(cin, 3, self.head_kernel),
                              conv_flops(cin, 3, self.head_kernel, h, w) / 1e9))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The stored form: ``arch`` first, then the fields (tuples stay tuples; JSON writes them as lists)."""
        values = asdict(self)
        own = [f.name for f in fields(self) if f.name not in _GEOMETRY + _STYLE]
        block = {**self.stored_constants, **{k: values[k] for k in own}}
        layout = self.stored_layout or tuple(own)
        return {"arch": self.arch, **{k: values[k] for k in _GEOMETRY}, **{k: block[k] for k in layout},
                **{k: values[k] for k in _STYLE}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> INRConfig:
        """Rebuild a config from its stored dict; on the base class the family comes from ``d["arch"]``."""
        if "arch" not in d:
            raise ValueError("INR config dict has no 'arch'")
        family = get_inr_family(d["arch"]).config
        if cls is not INRConfig and family is not cls:
            raise ValueError(f"{cls.__name__} cannot load an arch={d['arch']!r} config")
        rest = {k: v for k, v in d.items() if k != "arch"}
        for k, v in family.stored_constants.items():
            if k in rest:
                if _plain(rest[k]) != _plain(v):
                    raise ValueError(f"{family.__name__}: {k}={rest[k]!r} does not apply to arch {family.arch!r} "
                                     f"(stored headers may only carry its old default {v!r})")
                del rest[k]
        names = {f.name for f in fields(family)}
        unknown = set(rest) - names
        if unknown:
            raise ValueError(f"{family.__name__}: unknown keys {sorted(unknown)}")
        return family(**{k: tuple(v) if isinstance(v, list) else v for k, v in rest.items()})


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# --- layout rules shared by the families ------------------------------------------------------------------------

# Seed 000, Table 1: (max frames, stem dim, lower width). "Stem dim" is the channel count of the initial feature
# map (NeRV's fc_dim) and "lower width" the floor on decoder block channels (NeRV's --lower-width).
_TABLE1 = ((40, 24, 124), (100, 24, 148), (150, 32, 148), (200, 48, 148), (300, 64, 196), (math.inf, 128, 196))


def seed_size_rule(frames: int) -> tuple[int, int]:
    """Return ``(stem_dim, lower_width)`` for a clip of ``frames`` frames (seed Table 1)."""
    for max_frames, stem, lower in _TABLE1:
        if frames <= max_frames:
            return stem, lower
    raise AssertionError("unreachable")


def widest(make: Callable[[int], INRConfig], max_params: int, lo: int = 4, hi: int = 2048) -> INRConfig | None:
    """``make(w)`` for the largest width ``w`` in ``[lo, hi]`` whose stored parameters fit in ``max_params``
    (a family's rate sizing: its shape as a function of one width, which its parameter count grows with);
    ``None`` when even ``make(lo)`` is larger."""
    if make(lo).stored_params > max_params:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if make(mid).stored_params <= max_params:
            lo = mid
        else:
            hi = mid - 1
    return make(lo)


_STRIDE_CHOICES = (5, 4, 3, 2)


def default_num_blocks(height: int, width: int) -> int:
    """Seed: 5 blocks reach 1280x720, 4 blocks reach 320x240; tiny clips get 3."""
    short = min(height, width)
    return 5 if short >= 480 else 4 if short >= 96 else 3


def choose_layout(height: int, width: int, num_blocks: int | None = None) -> tuple[tuple[int, ...], int, int]:
    """Pick decoder strides for any frame size; return ``(strides, canvas_height, canvas_width)``.

    Rule: among all sequences of ``num_blocks`` strides from {5, 4, 3, 2} (largest first, as NeRV's [5,2,2,2,2]),
    take the one minimising ``|short side of the initial grid - 7| + 40 * padded fraction + 0.5 * (#strides 3 or 4)``.
    A size divisible by the stride product needs no padding (1280x720 -> [5,2,2,2,2], 320x240 -> [5,2,2,2],
    640x480 -> [5,2,2,2,2], 768x576 -> [4,3,2,2,2]); otherwise the canvas is padded up to the next multiple and the
    decoded frame cropped back, so every size encodes without the user choosing strides.
    """
    if height < 8 or width < 8:
        raise ValueError(f"frame size {width}x{height} is too small (min 8x8)")
    n = num_blocks or default_num_blocks(height, width)
    best = None
    for combo in itertools.combinations_with_replacement(_STRIDE_CHOICES, n):
        strides = tuple(sorted(combo, reverse=True))
        p = math.prod(strides)
        ch, cw = math.ceil(height / p) * p, math.ceil(width / p) * p
        grid_short = min(ch, cw) // p
        if grid_short < 1:
            continue
        pad = 1 - (height * width) / (ch * cw)
        odd = sum(s in (3, 4) for s in strides)
        score = abs(grid_short - 7) + 40 * pad + 0.5 * odd
        if best is None or score < best[0] - 1e-9:
            best = (score, strides, ch, cw)
    assert best is not None
    return best[1], best[2], best[3]
