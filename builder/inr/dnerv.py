"""D-NeRV (He et al., CVPR 2023, seed 002): one decoder shared by a collection of videos, conditioned on keyframes.

Videos are cut into clips of ``config.frames`` frames (8). A clip's keyframes are its first frame and the next
clip's first frame (each keyframe is shared by two clips; the last clip ends on the video's last frame and is padded
with copies of it, masked out of the loss and dropped on decode). A clip is decoded from:

- ``t``: the frames' indices normalised per video to [0, 1] (``f / (N - 1)``), positionally encoded -> MLP stem;
- ``keyframes``: the two keyframes, ``(B, 3, 2, H, W)`` -> the visual content encoder (3-D convs with the
  decoder's strides reversed) gives their features at the input scale of every decoder stage, and the RGB
  keyframes themselves at the output scale;
- ``dist``: each frame's distance from the start keyframe, as a fraction of the clip's keyframe gap ("backward
  distance"; 0 at the start keyframe, 1 at the end keyframe).

Every decoder stage: a flow head predicts forward/backward flow at the stage's scale, warps both keyframes'
features with it (``grid_sample``) and blends them by temporal distance; spatially-adaptive fusion (SAF) modulates
the decoder feature ``x * (1 + gamma) + beta`` with ``gamma, beta`` from the blended content; conv -> PixelShuffle
-> GELU; the global temporal MLP (GTMLP) mixes the clip's frames per channel, residually. The last stage warps the
RGB keyframes the same way and concatenates them with the decoder feature before the RGB head, whose output is a
correction added to those blended RGB keyframes (clamped to [0, 1], as the reference clamps its output; this
project's choice: a fresh model starts at keyframe interpolation instead of a flat colour).

Switches for the seed's ablation (``saf``, ``gtmlp``, ``flow``): ``saf=False`` is the NeRV row of the table (the
keyframes are not used at all: no content encoder, no SAF, no content at the stem or the head); ``flow=False``
blends the keyframes' content by distance without warping; ``gtmlp=False`` drops the temporal MLP.

Interface differences from NeRV/HNeRV (the smallest hook): the decode unit is a clip, so ``forward``,
``forward_intermediates`` and ``features`` take a :class:`ClipBatch` instead of frame indices, and exit features
are ``[B, C, T, H, W]``. ``config.frames`` is the clip length. For one video, :meth:`DNeRV.video_clips` turns its
length and (decoded) keyframes into clip batches, and :meth:`DNeRV.decode_video` / :meth:`DNeRV.video_features`
decode frames or per-frame exit features ``(N, C, H, W)`` at any frame indices; :func:`keyframe_positions` says
which frames of a video are its keyframes (what a member stores).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import INR
from .config import BlockInfo, INRConfig, choose_layout, conv_flops, conv_params, widest
from .layers import PositionalEncoding
from .registry import register_inr

__all__ = ["DNeRV", "DNeRVConfig", "dnerv_config", "ClipBatch", "keyframe_positions", "clip_plan", "DNERV_SIZES",
           "CLIP_FRAMES", "size_by_frames", "dnerv_for_params"]

CLIP_FRAMES = 8  # the seed's clip length

# S / M / L: (stem channels = first decoder width, content encoder width, block channel floor, MLP hidden width).
# This project's sizes, CPU-scale and scaled by 1.5x per step (the reference's UCF101 models are far larger and
# GPU-trained); ``size=None`` picks by the collection's total frame count as NeRV's Table 1 does.
DNERV_SIZES = {
    "S": (64, 32, 16, 128),
    "M": (96, 48, 24, 256),
    "L": (144, 64, 32, 512),
}
_SIZE_BY_FRAMES = ((1000, "S"), (10000, "M"), (math.inf, "L"))


def size_by_frames(frames: int) -> str:
    """The default size for a collection of ``frames`` frames in all (before any time-budget shrink)."""
    return next(name for max_frames, name in _SIZE_BY_FRAMES if frames <= max_frames)


def keyframe_positions(num_frames: int, clip: int = CLIP_FRAMES) -> list[int]:
    """The frames of an ``num_frames``-frame video that are keyframes: every clip's first frame and the video's
    last frame (the last clip's end keyframe)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    return sorted(set(range(0, num_frames, clip)) | {num_frames - 1})


def clip_plan(num_frames: int, clip_index: int, clip: int = CLIP_FRAMES) -> tuple[list[int], Tensor, Tensor, int, int]:
    """Clip ``clip_index`` of a video: ``(frames, t, dist, start_key, end_key)`` where ``frames`` are its ``clip``
    source frame indices (padded with the last frame), ``t`` their normalised indices, ``dist`` their backward
    distance, and ``start_key``/``end_key`` indices into :func:`keyframe_positions`."""
    n_clips = math.ceil(num_frames / clip)
    if not 0 <= clip_index < n_clips:
        raise IndexError(f"clip {clip_index} out of range: a {num_frames}-frame video has {n_clips} clips")
    keys = keyframe_positions(num_frames, clip)
    start = clip_index * clip
    end = min(start + clip, num_frames - 1)
    frames = [min(start + i, num_frames - 1) for i in range(clip)]
    t = torch.tensor(frames, dtype=torch.float32) / max(num_frames - 1, 1)
    dist = (torch.tensor(frames, dtype=torch.float32) - start) / max(end - start, 1)
    return frames, t, dist, keys.index(start), keys.index(end)


class ClipBatch(NamedTuple):
    """The input of one batch of clips: ``t`` and ``dist`` ``(B, T)``, ``keyframes`` ``(B, 3, 2, H, W)`` in [0, 1]
    at the source size (the model pads them to its canvas), ``mask`` ``(B, T)`` true for real (unpadded) frames."""

    t: Tensor
    keyframes: Tensor
    dist: Tensor
    mask: Tensor

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(*(x.to(device) for x in self))

    @staticmethod
    def cat(batches: Sequence[ClipBatch]) -> ClipBatch:
        return ClipBatch(*(torch.cat(xs) for xs in zip(*batches)))


@dataclass(frozen=True)
class DNeRVConfig(INRConfig):
    """``frames`` is the clip length (the decode unit); everything else is the shared decoder's geometry."""

    arch: ClassVar[str] = "dnerv"

    mlp_dim: int = 128
    pe_base: float = 1.25
    pe_levels: int = 40
    enc_dim: int = 32  # width of the visual content encoder
    saf: bool = True  # keyframe conditioning (content encoder, SAF, content at the stem and the head)
    gtmlp: bool = True  # global temporal MLP after every block
    flow: bool = True  # warp the keyframe content with predicted flow (else blend it unwarped)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frames < 2:
            raise ValueError("D-NeRV clips need at least 2 frames")

    @property
    def uses_flow(self) -> bool:
        return self.saf and self.flow

    def stage_channels(self) -> list[int]:
        """Input channels of each decoder stage and of the head."""
        first = self.stem_channels + (self.enc_dim if self.saf else 0)
        return [first, *self.channels]

    def encoder_info(self) -> BlockInfo:
        """The content encoder: a 3x3 conv at full size, then one (s x s, stride s) conv per decoder stride in
        reverse. Runs on 2 keyframes per clip of ``frames`` frames: FLOPs per decoded frame are scaled by 2/T."""
        e, h, w = self.enc_dim, self.height, self.width
        params, flops = conv_params(3, e, 3), conv_flops(3, e, 3, h, w)
        for s in reversed(self.strides):
            h, w = h // s, w // s
            params += conv_params(e, e, s)
            flops += conv_flops(e, e, s, h, w)
        return BlockInfo("content_encoder", e, *self.grid, 3, 1, params, flops * 2 / self.frames / 1e9)

    def _flow_head(self, cin: int, h: int, w: int) -> tuple[int, float]:
        if not self.uses_flow:
            return 0, 0.0
        mid = max(cin // 4, 4)
        return (conv_params(cin, mid, 1) + conv_params(mid, 4, 3),
                conv_flops(cin, mid, 1, h, w) + conv_flops(mid, 4, 3, h, w))

    def stem_info(self) -> list[BlockInfo]:
        gh, gw = self.grid
        pe = 2 * self.pe_levels
        out = self.stem_channels * gh * gw
        params = pe * self.mlp_dim + self.mlp_dim + self.mlp_dim * out + out
        flops = 2.0 * (pe * self.mlp_dim + self.mlp_dim * out)
        rows = [self.encoder_info()] if self.saf else []
        rows.append(BlockInfo("stem", self.stage_channels()[0], gh, gw, 0, 1, params, flops / 1e9, exit=0))
        return rows

    def block_info(self) -> list[BlockInfo]:
        """Content encoder (no exit), stem (exit 0), every stage (flow head + SAF + conv/shuffle + GTMLP; exit k)
        and the head (last flow head + RGB head). FLOPs per decoded frame; warping and norms are not counted."""
        rows = self.stem_info()
        (h, w), T = self.grid, self.frames
        cins = self.stage_channels()
        for i, (s, c, k) in enumerate(zip(self.strides, self.channels, self.kernels), start=1):
            cin = cins[i - 1]
            params, flops = self._flow_head(cin, h, w)
            if self.saf:
                params += conv_params(self.enc_dim, 2 * cin, 1)
                flops += conv_flops(self.enc_dim, 2 * cin, 1, h, w)
            params += conv_params(cin, c * s * s, k)
            flops += conv_flops(cin, c * s * s, k, h, w)
            h, w = h * s, w * s
            if self.gtmlp:
                params += c * T * T + c * T
                flops += 2.0 * c * T * h * w
            rows.append(BlockInfo(f"block{i}", c, h, w, k, s, params, flops / 1e9, exit=i))
        cin = cins[-1]
        params, flops = self._flow_head(cin, h, w)
        cin_h = cin + (3 if self.saf else 0)
        mid = max(cin_h // 4, 4)
        params += conv_params(cin_h, mid, 1) + conv_params(mid, 3, self.head_kernel)
        flops += conv_flops(cin_h, mid, 1, h, w) + conv_flops(mid, 3, self.head_kernel, h, w)
        rows.append(BlockInfo("head", 3, self.out_height, self.out_width, self.head_kernel, 1, params, flops / 1e9))
        return rows


def dnerv_config(
    frames: int,
    height: int,
    width: int,
    *,
    size: str | None = None,
    clip: int = CLIP_FRAMES,
    stem_dim: int | None = None,
    enc_dim: int | None = None,
    lower_width: int | None = None,
    mlp_dim: int | None = None,
    num_blocks: int | None = None,
    pe_levels: int = 40,
    saf: bool = True,
    gtmlp: bool = True,
    flow: bool = True,
) -> DNeRVConfig:
    """D-NeRV for a collection of ``frames`` frames in total (only used to pick S/M/L when ``size`` is None) of
    ``height x width``. Block 1 keeps ``stem_dim`` channels, each later block divides by its stride (the
    reference's reduction) but never drops below ``lower_width``; explicit widths override the size's."""
    if size is None:
        size = size_by_frames(frames)
    if size not in DNERV_SIZES:
        raise ValueError(f"size must be one of {tuple(DNERV_SIZES)}, got {size!r}")
    t_stem, t_enc, t_lower, t_mlp = DNERV_SIZES[size]
    stem, lower = stem_dim or t_stem, lower_width or t_lower
    strides, ch, cw = choose_layout(height, width, num_blocks)
    channels, c = [], stem
    for i, s in enumerate(strides):
        c = stem if i == 0 else max(round(c / s), lower)
        channels.append(c)
    return DNeRVConfig(
        frames=clip, out_height=height, out_width=width, height=ch, width=cw, strides=strides,
        channels=tuple(channels), kernels=(3,) * len(strides), stem_channels=stem, mlp_dim=mlp_dim or t_mlp,
        pe_levels=pe_levels, enc_dim=enc_dim or t_enc, saf=saf, gtmlp=gtmlp, flow=flow,
        activation="gelu", norm="none", head_kernel=3, out_act="sigmoid",
    )


# --- modules ---------------------------------------------------------------------------------------------------

def _fold(x: Tensor) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B*T, C, H, W]``."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _unfold(x: Tensor, t: int) -> Tensor:
    """``[B*T, C, H, W]`` -> ``[B, C, T, H, W]``."""
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).transpose(1, 2)


class ContentEncoder(nn.Module):
    """3-D convs (1 x k x k) over the two keyframes: a 3x3 conv at full size, then a patchify conv per decoder
    stride in reverse. ``forward`` returns the features at the input scale of decoder stage 0 .. n-1 (coarsest
    first) and the RGB keyframes (the head's scale)."""

    def __init__(self, config: DNeRVConfig) -> None:
        super().__init__()
        e = config.enc_dim
        self.head = nn.Sequential(nn.Conv3d(3, e, (1, 3, 3), padding=(0, 1, 1)), nn.GELU())
        self.down = nn.ModuleList(nn.Sequential(nn.Conv3d(e, e, (1, s, s), stride=(1, s, s)), nn.GELU())
                                  for s in reversed(config.strides))

    def forward(self, keyframes: Tensor) -> list[Tensor]:
        feats, x = [keyframes], self.head(keyframes)
        for down in self.down:
            x = down(x)
            feats.append(x)
        return feats[::-1]


class FlowHead(nn.Module):
    """1x1 conv -> GELU -> 3x3 conv to 4 channels (forward and backward flow, in pixels of the stage's scale)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        mid = max(cin // 4, 4)
        self.net = nn.Sequential(nn.Conv2d(cin, mid, 1), nn.GELU(), nn.Conv2d(mid, 4, 3, padding=1))
        nn.init.zeros_(self.net[2].weight)  # start at zero flow: warping begins as plain blending
        nn.init.zeros_(self.net[2].bias)

    def forward(self, x: Tensor) -> Tensor:
        return _unfold(self.net(_fold(x)), x.shape[2])


def warp(key: Tensor, flow: Tensor) -> Tensor:
    """Warp one keyframe's features ``key`` ``[B, C, H, W]`` to every frame of the clip with ``flow``
    ``[B, 2, T, H, W]`` (x, y displacements in pixels) -> ``[B, C, T, H, W]``."""
    b, c, h, w = key.shape
    t = flow.shape[2]
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)
    coords = base + flow.permute(0, 2, 3, 4, 1)  # (B, T, H, W, 2)
    scale = torch.tensor([max(w - 1, 1), max(h - 1, 1)], device=flow.device, dtype=flow.dtype)
    grid = (2 * coords / scale - 1).reshape(b * t, h, w, 2)
    src = key[:, None].expand(b, t, c, h, w).reshape(b * t, c, h, w)
    out = F.grid_sample(src, grid.to(src.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(b, t, c, h, w).transpose(1, 2)


class TemporalMLP(nn.Module):
    """Global temporal MLP: per channel, a T x T linear map across the clip's frames, added residually (zero
    init: the block starts as the identity)."""

    def __init__(self, channels: int, frames: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, frames, frames))
        self.bias = nn.Parameter(torch.zeros(channels, frames))

    def forward(self, x: Tensor) -> Tensor:
        mixed = torch.einsum("cst,bcthw->bcshw", self.weight.to(x.dtype), x)
        return x + mixed + self.bias.to(x.dtype)[None, :, :, None, None]


class DNeRVBlock(nn.Module):
    """(flow -> warp -> blend) -> SAF -> conv -> PixelShuffle -> GELU -> GTMLP, on ``[B, C, T, H, W]``."""

    def __init__(self, config: DNeRVConfig, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.flow = FlowHead(cin) if config.uses_flow else None
        self.style = nn.Conv2d(config.enc_dim, 2 * cin, 1) if config.saf else None
        if self.style is not None:  # start as the identity modulation
            nn.init.zeros_(self.style.weight)
            nn.init.zeros_(self.style.bias)
        self.conv = nn.Conv2d(cin, cout * stride * stride, kernel, padding=kernel // 2)
        self.shuffle = nn.PixelShuffle(stride)
        self.act = nn.GELU()
        self.tmlp = TemporalMLP(cout, config.frames) if config.gtmlp else None

    def forward(self, x: Tensor, content: Tensor | None, dist: Tensor) -> Tensor:
        t = x.shape[2]
        if self.style is not None and content is not None:
            fused = _fuse(content, self.flow(x) if self.flow is not None else None, dist)
            gamma, beta = _unfold(self.style(_fold(fused)), t).chunk(2, dim=1)
            x = x * (1 + gamma) + beta
        x = _unfold(self.act(self.shuffle(self.conv(_fold(x)))), t)
        return self.tmlp(x) if self.tmlp is not None else x


def _fuse(keys: Tensor, flow: Tensor | None, dist: Tensor) -> Tensor:
    """Blend the two keyframes' features ``keys`` ``[B, C, 2, H, W]`` for every frame: warped by ``flow``
    (forward flow from the start keyframe, backward from the end one) when given, weighted by temporal distance
    ``(1 - d) * start + d * end``."""
    d = dist[:, None, :, None, None].to(keys.dtype)
    start, end = keys[:, :, 0], keys[:, :, 1]
    if flow is None:
        return start[:, :, None] * (1 - d) + end[:, :, None] * d
    return warp(start, flow[:, :2]) * (1 - d) + warp(end, flow[:, 2:]) * d


class RGBHead(nn.Module):
    """(last flow head -> warped RGB keyframes, concatenated) -> 1x1 conv -> GELU -> k x k conv to RGB."""

    def __init__(self, config: DNeRVConfig, cin: int) -> None:
        super().__init__()
        self.flow = FlowHead(cin) if config.uses_flow else None
        self.use_keys = config.saf
        cin_h = cin + (3 if config.saf else 0)
        mid = max(cin_h // 4, 4)
        self.conv1 = nn.Conv2d(cin_h, mid, 1)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(mid, 3, config.head_kernel, padding=config.head_kernel // 2)

    @property
    def bias(self) -> Tensor:
        return self.conv2.bias

    @property
    def weight(self) -> Tensor:  # INR.frame_indices and friends find the model's device through head.weight
        return self.conv2.weight

    def forward(self, x: Tensor, rgb_keys: Tensor | None, dist: Tensor) -> Tensor:
        """RGB in [0, 1]: with keyframes, the warped, blended keyframes plus the head's correction (clamped);
        without (the NeRV row), a sigmoid of the head."""
        if not (self.use_keys and rgb_keys is not None):
            return torch.sigmoid(_unfold(self.conv2(self.act(self.conv1(_fold(x)))), x.shape[2]))
        warped = _fuse(rgb_keys.to(x.dtype), self.flow(x) if self.flow is not None else None, dist)
        delta = _unfold(self.conv2(self.act(self.conv1(_fold(torch.cat([x, warped], dim=1))))), x.shape[2])
        return (warped + delta).clamp(0, 1)


# --- the model -------------------------------------------------------------------------------------------------

def dnerv_for_params(frames: int, height: int, width: int, max_params: int, *, num_blocks: int | None = None,
                     saf: bool = True, gtmlp: bool = True, flow: bool = True) -> DNeRVConfig | None:
    """The largest D-NeRV of one shape that fits ``max_params`` (rate sizing): width ``w`` gives stem ``4w``,
    content encoder ``2w``, block floor ``w`` and MLP ``8w``, the proportions of size S (``w`` = 16)."""
    return widest(lambda w: dnerv_config(frames, height, width, stem_dim=4 * w, enc_dim=2 * w, lower_width=w,
                                         mlp_dim=8 * w, num_blocks=num_blocks, saf=saf, gtmlp=gtmlp, flow=flow),
                  max_params, lo=2, hi=256)


@register_inr("dnerv", config=DNeRVConfig, sizing=dnerv_config, for_params=dnerv_for_params, shared=True)
class DNeRV(INR):
    """A decoder shared by a collection; a clip is decoded from its frames' times, its two keyframes and distances.

    Training hooks: ``training.collection.fit_collection`` builds :class:`ClipBatch` es through
    :meth:`video_clips` and calls ``forward(batch)``; the recipe is ``"dnerv"``.
    """

    config: DNeRVConfig
    recipe = "dnerv"
    min_epochs = 100

    def __init__(self, config: DNeRVConfig) -> None:
        if not isinstance(config, DNeRVConfig):
            raise ValueError(f"DNeRV needs a DNeRVConfig (arch='dnerv'), got arch={config.arch!r}")
        super().__init__(config)
        self.pe = PositionalEncoding(config.pe_base, config.pe_levels)
        gh, gw = config.grid
        self.mlp = nn.Sequential(nn.Linear(self.pe.dim, config.mlp_dim), nn.GELU(),
                                 nn.Linear(config.mlp_dim, config.stem_channels * gh * gw), nn.GELU())
        self.encoder = ContentEncoder(config) if config.saf else None
        cins = config.stage_channels()
        self.blocks = nn.ModuleList(DNeRVBlock(config, cin, c, k, s) for cin, c, k, s in
                                    zip(cins, config.channels, config.kernels, config.strides))
        self.head = RGBHead(config, cins[-1])

    # --- clips of a video ------------------------------------------------------------------------------------
    def num_clips(self, num_frames: int) -> int:
        return math.ceil(num_frames / self.config.frames)

    def keyframe_positions(self, num_frames: int) -> list[int]:
        return keyframe_positions(num_frames, self.config.frames)

    def video_clips(self, keyframes: Tensor, num_frames: int, clips: Sequence[int] | None = None) -> ClipBatch:
        """The :class:`ClipBatch` of clips ``clips`` (default: all) of a ``num_frames``-frame video whose
        keyframes (the frames at :meth:`keyframe_positions`, decoded) are ``keyframes`` ``(K, 3, H, W)``."""
        keys = self.keyframe_positions(num_frames)
        if keyframes.ndim != 4 or keyframes.shape[0] != len(keys) or keyframes.shape[1] != 3:
            raise ValueError(f"a {num_frames}-frame video has {len(keys)} keyframes (K, 3, H, W); "
                             f"got {tuple(keyframes.shape)}")
        clips = range(self.num_clips(num_frames)) if clips is None else clips
        ts, ds, ks, ms = [], [], [], []
        for c in clips:
            frames, t, d, s, e = clip_plan(num_frames, c, self.config.frames)
            ts.append(t)
            ds.append(d)
            ks.append(torch.stack([keyframes[s], keyframes[e]], dim=1))
            ms.append(torch.tensor([c * self.config.frames + i < num_frames for i in range(self.config.frames)]))
        return ClipBatch(torch.stack(ts), torch.stack(ks).float(), torch.stack(ds), torch.stack(ms))

    # --- running the decoder ---------------------------------------------------------------------------------
    def _pad(self, keyframes: Tensor) -> Tensor:
        dh = self.config.height - keyframes.shape[-2]
        dw = self.config.width - keyframes.shape[-1]
        if not (dh or dw):
            return keyframes
        b, c, k, h, w = keyframes.shape
        flat = F.pad(keyframes.reshape(b, c * k, h, w), (0, dw, 0, dh), mode="replicate")
        return flat.reshape(b, c, k, h + dh, w + dw)

    def _check(self, clips: ClipBatch) -> ClipBatch:
        if not isinstance(clips, ClipBatch):
            raise TypeError("D-NeRV decodes clips: pass a ClipBatch (DNeRV.video_clips), not frame indices")
        T = self.config.frames
        if clips.t.ndim != 2 or clips.t.shape[1] != T or clips.dist.shape != clips.t.shape:
            raise ValueError(f"t and dist must be (B, {T}), got {tuple(clips.t.shape)} / {tuple(clips.dist.shape)}")
        k = clips.keyframes
        if k.ndim != 5 or k.shape[:3] != (clips.t.shape[0], 3, 2) or k.shape[-2:] != (
                self.config.out_height, self.config.out_width):
            raise ValueError(f"keyframes must be (B, 3, 2, {self.config.out_height}, {self.config.out_width}), "
                             f"got {tuple(k.shape)}")
        return clips

    def stem_clips(self, clips: ClipBatch) -> tuple[Tensor, list[Tensor] | None]:
        """Exit 0 ``[B, C0, T, gh, gw]`` and the keyframe content pyramid (None without SAF)."""
        b, T = clips.t.shape
        gh, gw = self.config.grid
        x = self.mlp(self.pe(clips.t.reshape(-1))).reshape(b, T, -1, gh, gw).transpose(1, 2)
        if self.encoder is None:
            return x, None
        content = self.encoder(self._pad(clips.keyframes))
        x = torch.cat([x, _fuse(content[0], None, clips.dist).to(x.dtype)], dim=1)
        return F.instance_norm(x), content

    def forward_intermediates(  # type: ignore[override]
        self,
        clips: ClipBatch,
        indices: int | Sequence[int] | None = None,
        stop_early: bool = False,
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Decode clips, collecting the features after the blocks in ``indices`` (0 = stem), each
        ``[B, C, T, H, W]``; ``stop_early`` skips later blocks and the head (RGB output None)."""
        n = self.num_blocks
        wanted = list(range(n + 1)) if indices is None else [indices] if isinstance(indices, int) else list(indices)
        for k in wanted:
            if not 0 <= k <= n:
                raise IndexError(f"exit block {k} out of range: this INR has blocks 1..{n} (0 = stem)")
        last = max(wanted) if stop_early else n
        clips = self._check(clips)
        x, content = self.stem_clips(clips)
        feats = [x] if 0 in wanted else []
        for k, block in enumerate(self.blocks[:last], start=1):
            x = block(x, content[k - 1] if content is not None else None, clips.dist)
            if k in wanted:
                feats.append(x)
        if stop_early and last < n:
            return None, feats
        return self.to_rgb(x, content[-1] if content is not None else None, clips.dist), feats

    def features(self, clips: ClipBatch, exit_block: int) -> Tensor:  # type: ignore[override]
        """``[B, C, T, H, W]`` after block ``exit_block`` (later blocks and the head are not computed)."""
        return self.forward_intermediates(clips, [exit_block], stop_early=True)[1][0]

    def to_rgb(self, x: Tensor, rgb_keys: Tensor | None = None, dist: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if dist is None:
            dist = torch.zeros(x.shape[0], x.shape[2], device=x.device)
        return self.head(x, rgb_keys, dist)[..., : self.config.out_height, : self.config.out_width]

    def forward(self, clips: ClipBatch, frames: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """RGB clips ``[B, 3, T, H, W]`` in [0, 1]."""
        return self.forward_intermediates(clips)[0]

    # --- one video -------------------------------------------------------------------------------------------
    def _clips_for(self, num_frames: int, idx: Sequence[int] | Tensor) -> tuple[list[int], Tensor]:
        t = torch.as_tensor(idx).long().reshape(-1)
        if t.numel() == 0:
            raise ValueError("no frame indices given")
        bad = t[(t < 0) | (t >= num_frames)]
        if bad.numel():
            raise IndexError(f"frame index {int(bad[0])} out of range: this video has {num_frames} frames "
                             f"(0..{num_frames - 1})")
        return sorted(set((t // self.config.frames).tolist())), t

    def _video_run(self, keyframes: Tensor, num_frames: int, idx, fn, clip_batch: int) -> Tensor:
        clips, t = self._clips_for(num_frames, idx)
        device = self.head.weight.device
        outs = []
        for i in range(0, len(clips), clip_batch):
            batch = self.video_clips(keyframes, num_frames, clips[i:i + clip_batch]).to(device)
            outs.append(fn(batch))  # [b, C, T, H, W]
        out = torch.cat(outs)
        where = {c: j for j, c in enumerate(clips)}
        T = self.config.frames
        ci = torch.tensor([where[int(f) // T] for f in t], device=out.device)
        fi = (t % T).to(out.device)
        return out[ci, :, fi]  # (N, C, H, W)

    @torch.no_grad()
    def decode_video(self, keyframes: Tensor, num_frames: int, idx: Sequence[int] | Tensor | None = None,
                     clip_batch: int = 4) -> Tensor:
        """Frames ``idx`` (default: all) of a ``num_frames``-frame video with decoded ``keyframes`` ``(K, 3, H, W)``
        -> ``(N, 3, H, W)`` in [0, 1] (every clip holding a requested frame is decoded whole)."""
        idx = range(num_frames) if idx is None else idx
        return self._video_run(keyframes, num_frames, idx, self, clip_batch)

    @torch.no_grad()
    def video_features(self, keyframes: Tensor, num_frames: int, idx: Sequence[int] | Tensor, exit_block: int,
                       clip_batch: int = 4) -> Tensor:
        """Per-frame exit features ``(N, C, H, W)`` (``features`` with T folded out) at frames ``idx``."""
        return self._video_run(keyframes, num_frames, idx, lambda b: self.features(b, exit_block), clip_batch)

    @torch.no_grad()
    def before_fit(self, frames: Tensor) -> None:
        """With keyframes the head starts as a zero correction of the blended keyframes; without, at the
        collection's mean colour (``frames`` any ``(N, 3, H, W)`` sample)."""
        if self.config.saf:
            nn.init.zeros_(self.head.conv2.weight)
            nn.init.zeros_(self.head.conv2.bias)
            return
        mu = frames.float().mean((0, 2, 3)).clamp(1e-3, 1 - 1e-3).to(self.head.bias.device)
        self.head.bias.copy_(torch.logit(mu))

    def decode_all(self, batch_size: int = 8) -> Tensor:  # type: ignore[override]
        raise TypeError("a D-NeRV decoder holds no video: use decode_video(keyframes, num_frames)")

    def frame_indices(self, idx):  # type: ignore[override]
        raise TypeError("D-NeRV decodes clips: use video_clips / decode_video")
