"""Typed configuration shared by the CLI, the models, the codec and the store.

Every artefact (bitstream header, store metadata) embeds ``to_dict()`` of the config it was made with, so a file
can rebuild its own model with ``from_dict`` and no shape guessing.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = [
    "ARCHS",
    "INRConfig",
    "QuantConfig",
    "TrainConfig",
    "AdapterTrainConfig",
    "choose_layout",
    "seed_size_rule",
    "nerv_config",
    "hnerv_config",
    "inr_config",
]

ARCHS = ("nerv", "hnerv")
ACTIVATIONS = ("relu", "gelu", "silu", "leaky_relu")
NORMS = ("instance", "none")
IMAGE_ADAPTER_KINDS = ("conv1x1", "conv3x3", "bottleneck")  # = builder.adapters.IMAGE_ADAPTERS (no torch import here)


def _from_dict(cls, d: dict[str, Any]):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kwargs)


@dataclass(frozen=True)
class INRConfig:
    """Architecture of one video's INR.

    The decoder works on a ``height x width`` canvas (``grid * prod(strides)``); when the source size is not a
    multiple of the stride product the canvas is larger and ``forward`` crops the top-left
    ``out_height x out_width`` region (see :func:`choose_layout`).
    """

    arch: str
    frames: int
    out_height: int
    out_width: int
    height: int
    width: int
    strides: tuple[int, ...]
    channels: tuple[int, ...]  # output channels of each decoder block
    kernels: tuple[int, ...]  # conv kernel size of each decoder block
    stem_channels: int  # channels of the initial feature map (NeRV's fc_dim, the seed's "stem dim")
    mlp_dim: int = 512  # NeRV: hidden width of the MLP stem
    pe_base: float = 1.25  # NeRV: positional encoding base
    pe_levels: int = 40  # NeRV: positional encoding levels (2 * levels inputs)
    embed_dim: int = 16  # HNeRV: channels of the per-frame embedding
    enc_dim: int = 64  # HNeRV: width of the ConvNeXt encoder (not stored)
    activation: str = "relu"
    norm: str = "instance"
    head_kernel: int = 1
    out_act: str = "tanh"  # "tanh" -> (tanh + 1) / 2 as NeRV, or "sigmoid"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
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
    def grid(self) -> tuple[int, int]:
        p = math.prod(self.strides)
        return self.height // p, self.width // p

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> INRConfig:
        return _from_dict(cls, d)


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
        return _from_dict(cls, d)


@dataclass(frozen=True)
class TrainConfig:
    """Per-video INR fitting. ``recipe`` picks loss and defaults: NeRV = 0.7 L1 + 0.3 (1 - SSIM), HNeRV = L2."""

    recipe: str = "nerv"
    epochs: int = 300
    time_budget: float | None = None  # seconds; stops training and drives the cosine schedule
    target_psnr: float | None = None  # dB on all frames; checked after each epoch
    lr: float | None = None  # None: recipe default
    batch_size: int = 2
    warmup: float = 0.2  # fraction of the schedule spent warming up
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        if self.recipe not in ARCHS:
            raise ValueError(f"recipe must be one of {ARCHS}, got {self.recipe!r}")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError("time_budget must be > 0 seconds")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class AdapterTrainConfig:
    """Adapter fitting with INR and backbone frozen (seed 000 §1.1 / issue recipe): loss 1.0 MSE + 0.2 (1 - cos)
    + 0.1 SmoothL1 on the injection layer's features, Adam ``lr``, early stopping after ``patience`` epochs without
    a 1 % loss improvement. ``init="ls"`` starts 1x1 adapters from the closed-form least-squares fit (and
    ``conv3x3``/``bottleneck`` from that fit of their 1x1 path). ``adapter`` replaces the seed's ``conv1x1`` at
    (C, H, W) cuts with a capacity ablation (None: the task's seed adapter).

    ``joint=True`` then fine-tunes the INR with the chosen pair's adapter for ``joint_epochs`` (``training.joint``):
    ``joint_recon`` x reconstruction + ``joint_feature`` x feature loss + ``joint_task`` x KL to the raw-frame
    logits (tasks with class logits), INR at ``joint_lr``, adapter at ``lr``. The seed names the joint mode but
    gives no weights; 1.0 / 0.5 / 0.2 are this project's defaults (issue 3)."""

    lr: float = 1e-4
    batch_size: int = 4
    epochs: int = 30
    patience: int = 5
    init: str = "default"  # "default" (PyTorch init) or "ls"
    target: str = "raw"  # backbone features of the "raw" frames or of the INR's "decoded" frames
    task_loss: float = 0.0  # weight of KL(raw-frame logits || NVP logits) through the frozen tail; 0 = seed recipe
    seed: int = 0
    adapter: str | None = None  # None: the task's seed adapter; else one of IMAGE_ADAPTER_KINDS at (C, H, W) cuts
    joint: bool = False  # also fine-tune the INR (then it is re-quantised and stored again)
    joint_epochs: int = 10
    joint_lr: float = 1e-4  # the INR is already fitted: a tenth of the fitting recipes' peak lr
    joint_recon: float = 1.0
    joint_feature: float = 0.5
    joint_task: float = 0.2

    def __post_init__(self) -> None:
        if self.task_loss < 0:
            raise ValueError(f"task_loss must be >= 0, got {self.task_loss}")
        if self.init not in ("default", "ls"):
            raise ValueError(f"init must be 'default' or 'ls', got {self.init!r}")
        if self.target not in ("raw", "decoded"):
            raise ValueError(f"target must be 'raw' or 'decoded', got {self.target!r}")
        if self.adapter is not None and self.adapter not in IMAGE_ADAPTER_KINDS:
            raise ValueError(f"adapter must be None (the seed's) or one of {IMAGE_ADAPTER_KINDS}, got {self.adapter!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
        if self.joint_epochs < 1 or self.joint_lr <= 0:
            raise ValueError("joint_epochs must be >= 1 and joint_lr > 0")
        if min(self.joint_recon, self.joint_feature, self.joint_task) < 0:
            raise ValueError("joint loss weights must be >= 0")
        if self.joint and self.joint_recon == 0:
            raise ValueError("joint_recon must be > 0: without reconstruction the INR stops being the video")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdapterTrainConfig:
        return _from_dict(cls, d)


# --- sizing rules ---------------------------------------------------------------------------------------------

# Seed 000, Table 1: (max frames, stem dim, lower width). "Stem dim" is the channel count of the initial feature
# map (NeRV's fc_dim) and "lower width" the floor on decoder block channels (NeRV's --lower-width).
_TABLE1 = ((40, 24, 124), (100, 24, 148), (150, 32, 148), (200, 48, 148), (300, 64, 196), (math.inf, 128, 196))


def seed_size_rule(frames: int) -> tuple[int, int]:
    """Return ``(stem_dim, lower_width)`` for a clip of ``frames`` frames (seed Table 1)."""
    for max_frames, stem, lower in _TABLE1:
        if frames <= max_frames:
            return stem, lower
    raise AssertionError("unreachable")


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


def nerv_config(
    frames: int,
    height: int,
    width: int,
    *,
    stem_dim: int | None = None,
    lower_width: int | None = None,
    mlp_dim: int = 512,
    num_blocks: int | None = None,
    reduction: int = 2,
    activation: str = "relu",
    norm: str = "instance",
    pe_levels: int = 40,
) -> INRConfig:
    """NeRV as in the seed: PE(t) -> MLP stem -> [conv -> PixelShuffle -> norm -> act] x n -> 1x1 RGB head.

    Channels follow NeRV: block 1 keeps ``stem_dim``, each later block halves (``reduction``) but never drops
    below ``lower_width``. Missing sizes come from seed Table 1 by frame count.
    """
    t_stem, t_lower = seed_size_rule(frames)
    stem = stem_dim or t_stem
    lower = lower_width or t_lower
    strides, ch, cw = choose_layout(height, width, num_blocks)
    channels, c = [], stem
    for i in range(len(strides)):
        c = stem if i == 0 else max(c // reduction, lower)
        channels.append(c)
    return INRConfig(
        arch="nerv", frames=frames, out_height=height, out_width=width, height=ch, width=cw, strides=strides,
        channels=tuple(channels), kernels=(3,) * len(strides), stem_channels=stem, mlp_dim=mlp_dim,
        pe_levels=pe_levels, activation=activation, norm=norm, head_kernel=1, out_act="tanh",
    )


def hnerv_config(
    frames: int,
    height: int,
    width: int,
    *,
    stem_dim: int | None = None,
    lower_width: int = 12,
    embed_dim: int = 16,
    enc_dim: int = 64,
    num_blocks: int | None = None,
    reduce: float = 1.2,
    ks: tuple[int, int] = (1, 5),
    activation: str = "gelu",
    norm: str = "none",
) -> INRConfig:
    """HNeRV: per-frame embedding -> 1x1 conv stem -> blocks with growing kernels (1, 3, 5, 5, ...) and channels
    divided by ``reduce`` per block (floor ``lower_width``) -> 3x3 RGB head. ``stem_dim`` (first decoder width)
    defaults to Table 1's lower width for the frame count.
    """
    stem = stem_dim or seed_size_rule(frames)[1]
    strides, ch, cw = choose_layout(height, width, num_blocks)
    channels, c = [], float(stem)
    for _ in strides:
        c = max(round(c / reduce), lower_width)
        channels.append(int(c))
    kernels = tuple(min(ks[0] + 2 * i, ks[1]) for i in range(len(strides)))
    return INRConfig(
        arch="hnerv", frames=frames, out_height=height, out_width=width, height=ch, width=cw, strides=strides,
        channels=tuple(channels), kernels=kernels, stem_channels=stem, embed_dim=embed_dim, enc_dim=enc_dim,
        activation=activation, norm=norm, head_kernel=3, out_act="sigmoid",
    )


def inr_config(arch: str, frames: int, height: int, width: int, **kw: Any) -> INRConfig:
    """Dispatch to :func:`nerv_config` / :func:`hnerv_config`; ``None`` values fall back to defaults."""
    kw = {k: v for k, v in kw.items() if v is not None}
    if arch == "nerv":
        return nerv_config(frames, height, width, **kw)
    if arch == "hnerv":
        return hnerv_config(frames, height, width, **kw)
    raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
