"""The seed's tiny adapters (seed 000 §1.1): INR decoder features -> a backbone's features at an injection layer.

- ``conv1x1``: resize to the injection layer's spatial size + one 1x1 Conv2d (ResNet50, CLIP-RN50,
  EfficientNet-Lite0).
- ``patch_embed``: AdaptiveAvgPool2d to a 14x14 grid, 1x1 conv to the embedding dim, flatten, LayerNorm,
  learnable class token and position embeddings -> (B, 1 + 14*14, dim) (ViT, DETR, BLIP).
- ``conv3d``: MaxPool3d over time when the clip is longer than the target, trilinear resize, one 1x1x1 Conv3d
  (I3D, SlowFast).

Capacity ablations of ``conv1x1`` (not in the seed; same input and output, built to stay under 1 % of a backbone):

- ``conv3x3``: a depthwise 3x3 conv (spatial context per channel) before the 1x1 conv. A dense 3x3 would cost 9x
  the 1x1's weights, over the 1 % budget at mid and late cuts of a seed-sized INR (148 channels).
- ``bottleneck``: a residual nonlinear branch (1x1 down -> GELU -> 1x1 up, in the INR's channel space) before the
  1x1 conv.

Both start as exactly the 1x1 adapter (depthwise kernel = identity, branch output = 0), so the least-squares fit of
their 1x1 path (``ls_input``) starts them where the LS 1x1 adapter ends, and training explores from there.

Every adapter records its ``in_spec``/``out_spec`` and a JSON config, so it can be stored next to its video and
rebuilt with :func:`adapter_from_config`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureSpec", "Adapter", "Conv1x1Adapter", "Conv3x3Adapter", "BottleneckAdapter", "PatchEmbedAdapter",
           "Conv3dAdapter", "ADAPTERS", "IMAGE_ADAPTERS", "build_adapter", "adapter_from_config"]


@dataclass(frozen=True)
class FeatureSpec:
    """Shape of one sample's features without the batch dim: ``(C, H, W)``, ``(C, T, H, W)`` or ``(N, D)``."""

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.shape or any(int(s) < 1 for s in self.shape):
            raise ValueError(f"feature shape must be positive, got {self.shape}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def channels(self) -> int:
        return self.shape[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Adapter(nn.Module):
    kind: str = ""

    def __init__(self, in_spec: FeatureSpec, out_spec: FeatureSpec) -> None:
        super().__init__()
        self.in_spec, self.out_spec = in_spec, out_spec

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_shape": list(self.in_spec.shape), "out_shape": list(self.out_spec.shape)}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def ls_input(self, x: Tensor) -> Tensor:
        """For least-squares init of the linear 1x1 path ``self.conv``: its input at the output's size, so that
        ``forward(x) == conv(ls_input(x))``."""
        raise ValueError(f"least-squares init needs an adapter with a linear 1x1 path, not {self.kind}")


class Conv1x1Adapter(Adapter):
    """Bilinear resize + 1x1 conv. Both are linear per pixel / per channel, so they commute (bilinear weights sum
    to one, so even the bias passes through): the conv runs on whichever side is smaller."""

    kind = "conv1x1"

    def __init__(self, in_spec: FeatureSpec, out_spec: FeatureSpec) -> None:
        super().__init__(in_spec, out_spec)
        if len(in_spec.shape) != 3 or len(out_spec.shape) != 3:
            raise ValueError("conv1x1 adapter maps (C, H, W) features to (C, H, W) features")
        self.conv = nn.Conv2d(in_spec.channels, out_spec.channels, 1)
        cin, hin, win = in_spec.shape
        cout, hout, wout = out_spec.shape
        self.conv_first = cout * hin * win < cout * hout * wout

    def spatial(self, x: Tensor) -> Tensor:
        """The resize alone (no channel mixing)."""
        size = self.out_spec.shape[1:]
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.conv(x)) if self.conv_first else self.conv(self.spatial(x))

    def ls_input(self, x: Tensor) -> Tensor:
        return self.spatial(x)


class Conv3x3Adapter(Conv1x1Adapter):
    """Depthwise 3x3 conv (``in`` channels) + 1x1 conv, at the smaller of the input and output resolutions (before
    the resize when the input is smaller, after it otherwise). The depthwise kernel starts as the identity."""

    kind = "conv3x3"

    def __init__(self, in_spec: FeatureSpec, out_spec: FeatureSpec) -> None:
        super().__init__(in_spec, out_spec)
        cin = in_spec.channels
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, padding_mode="replicate")
        with torch.no_grad():
            self.dw.weight.zero_()[:, 0, 1, 1] = 1.0
            self.dw.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if self.conv_first:  # 1x1 and bilinear resize commute: convolve at the small size, then resize
            return self.spatial(self.conv(self.dw(x)))
        return self.conv(self.dw(self.spatial(x)))

    def ls_input(self, x: Tensor) -> Tensor:
        return self.spatial(self.dw(x)) if self.conv_first else self.dw(self.spatial(x))


class BottleneckAdapter(Conv1x1Adapter):
    """``conv1x1(z + up(GELU(down(z))))``: a residual two-layer bottleneck (1x1 down to ``hidden`` channels, GELU,
    1x1 up) on the INR features z, then the 1x1 conv. The branch works in the INR's channel space, so its size does
    not grow with the target's channels (1280 at EfficientNet's last cut); default ``hidden`` = max(8, in / 16)
    keeps the adapter under 1 % of a backbone wherever the seed's 1x1 is. ``up`` starts at zero, so the adapter
    starts as the 1x1 (and its LS fit). Runs at the smaller resolution, like :class:`Conv3x3Adapter`."""

    kind = "bottleneck"

    def __init__(self, in_spec: FeatureSpec, out_spec: FeatureSpec, hidden: int | None = None) -> None:
        super().__init__(in_spec, out_spec)
        cin = in_spec.channels
        self.hidden = int(hidden) if hidden is not None else max(8, cin // 16)
        if self.hidden < 1:
            raise ValueError(f"bottleneck hidden width must be >= 1, got {hidden}")
        self.down = nn.Conv2d(cin, self.hidden, 1)
        self.act = nn.GELU()
        self.up = nn.Conv2d(self.hidden, cin, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden": self.hidden}

    def mixed(self, x: Tensor) -> Tensor:
        return x + self.up(self.act(self.down(x)))

    def forward(self, x: Tensor) -> Tensor:
        if self.conv_first:
            return self.spatial(self.conv(self.mixed(x)))
        return self.conv(self.mixed(self.spatial(x)))

    def ls_input(self, x: Tensor) -> Tensor:
        return self.spatial(self.mixed(x)) if self.conv_first else self.mixed(self.spatial(x))


class PatchEmbedAdapter(Adapter):
    """INR features -> ViT token sequence ``(B, 1 + g*g, dim)`` (class token + position embeddings)."""

    kind = "patch_embed"

    def __init__(self, in_spec: FeatureSpec, out_spec: FeatureSpec) -> None:
        super().__init__(in_spec, out_spec)
        tokens, dim = out_spec.shape
        grid = int(round((tokens - 1) ** 0.5))
        if len(out_spec.shape) != 2 or grid * grid + 1 != tokens:
            raise ValueError(f"patch_embed output must be (1 + g*g, dim), got {out_spec.shape}")
        self.grid = grid
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.proj = nn.Conv2d(in_spec.channels, dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        t = self.norm(self.proj(self.pool(x)).flatten(2).transpose(1, 2))
        return torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed


class Conv3dAdapter(Adapter):
    """Clip features ``(B, C, T, H, W)``: MaxPool3d over time if T is larger than the target's, trilinear resize,
    1x1x1 Conv3d."""

    kind = "conv3d"

    def __init__(self, in_spec: FeatureSpec, out_spec: FeatureSpec) -> None:
        super().__init__(in_spec, out_spec)
        if len(in_spec.shape) != 4 or len(out_spec.shape) != 4:
            raise ValueError("conv3d adapter maps (C, T, H, W) features to (C, T, H, W) features")
        tin, tout = in_spec.shape[1], out_spec.shape[1]
        k = tin // tout if tin > tout else 1
        self.pool = nn.MaxPool3d((k, 1, 1), stride=(k, 1, 1)) if k > 1 else nn.Identity()
        self.conv = nn.Conv3d(in_spec.channels, out_spec.channels, 1)

    def spatial(self, x: Tensor) -> Tensor:
        """Temporal pooling and resize alone (no channel mixing)."""
        x = self.pool(x)
        size = self.out_spec.shape[1:]
        return x if tuple(x.shape[-3:]) == size else F.interpolate(x, size=size, mode="trilinear",
                                                                     align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.spatial(x))

    def ls_input(self, x: Tensor) -> Tensor:
        return self.spatial(x)


ADAPTERS: dict[str, type[Adapter]] = {a.kind: a for a in (Conv1x1Adapter, Conv3x3Adapter, BottleneckAdapter,
                                                          PatchEmbedAdapter, Conv3dAdapter)}
# interchangeable kinds for (C, H, W) -> (C, H, W) cuts: the seed's 1x1 first, then its capacity ablations
IMAGE_ADAPTERS = ("conv1x1", "conv3x3", "bottleneck")


def build_adapter(kind: str, in_spec: FeatureSpec | tuple[int, ...], out_spec: FeatureSpec | tuple[int, ...],
                  **options: Any) -> Adapter:
    """``options``: kind-specific settings (``bottleneck``: ``hidden``)."""
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter kind {kind!r}; choose one of {sorted(ADAPTERS)}")
    as_spec = lambda s: s if isinstance(s, FeatureSpec) else FeatureSpec(tuple(s))  # noqa: E731
    try:
        return ADAPTERS[kind](as_spec(in_spec), as_spec(out_spec), **options)
    except TypeError as e:
        if not options:
            raise
        raise ValueError(f"adapter {kind!r} does not take options {sorted(options)}: {e}") from None


def adapter_from_config(cfg: dict[str, Any]) -> Adapter:
    options = {k: v for k, v in cfg.items() if k not in ("kind", "in_shape", "out_shape")}
    return build_adapter(cfg["kind"], tuple(cfg["in_shape"]), tuple(cfg["out_shape"]), **options)
