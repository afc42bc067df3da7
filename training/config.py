"""Training configs: INR fitting (``TrainConfig``) and adapter / joint fitting (``AdapterTrainConfig``).

Stored with every artefact they trained (``to_dict``), so they are plain frozen dataclasses. ``training`` imports
nothing from ``builder``: builder depends on training, never the other way round.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .recipes import RECIPES

__all__ = ["ADAPTER_RECIPES", "DEFAULT_ADAPTER_RECIPE", "TrainConfig", "AdapterTrainConfig", "IMAGE_ADAPTER_KINDS",
           "dataclass_from_dict"]

# the adapter kinds at (C, H, W) cuts; builder.adapters.IMAGE_ADAPTERS builds exactly these
IMAGE_ADAPTER_KINDS = ("conv1x1", "conv3x3", "bottleneck")


def dataclass_from_dict(cls, d: dict[str, Any]):
    """``cls(**d)`` for a stored dict: unknown keys are an error, JSON lists become tuples."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kwargs)


@dataclass(frozen=True)
class TrainConfig:
    """Per-video INR fitting. ``recipe`` names an entry of ``RECIPES`` (loss and defaults; an INR family names
    its own, e.g. NeRV = 0.7 L1 + 0.3 (1 - SSIM), HNeRV = L2)."""

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
    # NHWC weights and activations on CUDA; off: measured 20 % slower for HNeRV at 720p in bf16 on an H200
    # (docs/BENCHMARKS.md, "GPU path"); ignored on CPU
    channels_last: bool = False
    # torch.compile the model for the fit: 1.4x faster epochs at 720p on an H200 after a 38 s compile that the
    # time budget pays, so it wins from budgets of about 3 minutes (docs/BENCHMARKS.md, "GPU path")
    compile: bool = False
    # fraction of the training (epochs and time budget) spent at the end fine-tuning through the coder's quantiser
    # (builder.inr.qat, at a tenth of the lr); 0: post-training quantisation only
    qat: float = 0.0
    # weight of the rate term: loss + rate_weight x the coder's estimated bits per pixel of the clip (the caller
    # supplies the estimate, builder.inr.qat.rate_bits); 0: no rate term
    rate_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError("time_budget must be > 0 seconds")
        if self.rate_weight < 0:
            raise ValueError(f"rate_weight must be >= 0, got {self.rate_weight}")
        if not 0.0 <= self.qat < 1.0:
            raise ValueError(f"qat must be in [0, 1), got {self.qat}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, d)


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
        return dataclass_from_dict(cls, d)


# Named adapter recipes (``adapt --recipe``). "nvp" is the measured best out of sample (docs/BENCHMARKS.md, issue
# 11): least-squares init, a 10x larger lr, KL to the raw frames' logits through the frozen tail (kinds with class
# logits only) and a depthwise 3x3 in front of the 1x1 (at (C, H, W) cuts; other cuts keep their seed adapter).
# "seed" is seed 000's recipe as written: PyTorch init, lr 1e-4, feature loss only, the task's seed adapter.
ADAPTER_RECIPES = {
    "nvp": AdapterTrainConfig(init="ls", lr=1e-3, task_loss=1.0, adapter="conv3x3"),
    "seed": AdapterTrainConfig(),
}
DEFAULT_ADAPTER_RECIPE = "nvp"
