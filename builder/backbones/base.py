"""Backbone protocol, split result types and the backbone registry.

A :class:`Backbone` describes one downstream model (preprocessing, weights, curated cut points)
and holds the ``nn.Module`` it loaded last. ``split(at)`` cuts that module into a *front* (the
layers the NVP pipeline skips: the INR adapter replaces them) and a *tail* (the layers it runs).
The preprocessing a model was built for (its input size) is recorded on the model itself
(:func:`with_preprocessing`), not kept as state of the backbone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tensor_spec import TensorSpec
from ..weights import WeightsSpec, resolve_weights
from ._split import SplitError, Traced, fx_node_names, fx_split, sequential_split, trace

__all__ = [
    "SplitModel",
    "SplitError",
    "Backbone",
    "with_preprocessing",
    "register_backbone",
    "get_backbone",
    "list_backbones",
    "resize_frames",
    "check_frames",
]

Inputs = tuple[Any, ...]

@dataclass
class SplitModel:
    """A backbone cut in two: ``tail(*front(*x)) ≈ model(*x)``.

    Naming: ``front`` and ``tail`` are the two halves of the split (``front`` = the early layers the
    INR adapter replaces, ``tail`` = the layers that still run); "head" is kept for the INR's RGB
    conv and a model's classification layer. ``front`` always returns a tuple, one entry per
    :attr:`cut` spec; ``tail`` takes those positionally. Both share parameters with the model.
    """

    front: nn.Module
    tail: nn.Module
    cut: list[TensorSpec]
    at: str = ""

    def __call__(self, *x: Any) -> Any:
        return self.tail(*self.front(*x))


PREPROCESSING = "nvp_preprocessing"  # the attribute of a loaded model holding its preprocessing settings


def with_preprocessing(model: nn.Module, **settings: Any) -> nn.Module:
    """Record on ``model`` the preprocessing it was built for (``input_size``; DETR: its resize edges); settings
    given as None keep the family's default. A family's :meth:`Backbone.build` / :meth:`Backbone.load_weights`
    returns its model through this when a config or the weights change the input."""
    setattr(model, PREPROCESSING, {k: tuple(v) if isinstance(v, (list, tuple)) else v
                                   for k, v in settings.items() if v is not None})
    return model


def resize_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (antialiased) resize of (N, 3, H, W) frames to ``size`` = (H, W)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)


def check_frames(frames: Tensor) -> Tensor:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise ValueError(f"frames must be float in [0, 1], got {frames.dtype}")
    return frames


class Backbone:
    """One downstream model: weights, preprocessing and curated cut points.

    Subclasses set the class attributes and implement :meth:`build` (architecture, random init)
    and :meth:`load_weights` (read a local file into it). The FX split is generic; families whose
    code cannot be traced override :meth:`_split_modules` with an explicit front/tail.

    Preprocessing settings (:attr:`preprocess_attrs`) are read, in this order, from the loaded model
    (:func:`with_preprocessing`), from :meth:`apply_preprocess_settings` (a served input step without
    the model), or from the class's ``default_<setting>``.
    """

    name: ClassVar[str]
    input_kind: ClassVar[str] = "image"  # "image" or "video"
    mean: ClassVar[tuple[float, float, float]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, float, float]] = (0.229, 0.224, 0.225)
    default_input_size: ClassVar[tuple[int, ...]] = (224, 224)  # (H, W), or (T, H, W) for video
    weights_spec: ClassVar[WeightsSpec]
    curated_cuts: ClassVar[tuple[str, ...]] = ()
    default_cut: ClassVar[str] = ""
    # what :meth:`preprocess` depends on besides the class constants (a served input step restores it)
    preprocess_attrs: ClassVar[tuple[str, ...]] = ("input_size",)
    # dims of the model's input that vary at run time (batch; DETR: also the frame size, set by the video's)
    dynamic_input_dims: ClassVar[tuple[int, ...]] = (0,)

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self._restored: dict[str, Any] = {}  # apply_preprocess_settings

    def setting(self, key: str, model: nn.Module | None = None) -> Any:
        """Preprocessing setting ``key`` of ``model`` (default: the loaded one); see the class docstring."""
        m = model if model is not None else self.model
        recorded = getattr(m, PREPROCESSING, {}) if m is not None else {}
        if key in recorded:
            return recorded[key]
        return self._restored.get(key, getattr(self, f"default_{key}"))

    @property
    def input_size(self) -> tuple[int, ...]:
        """(H, W), or (T, H, W) for video, that the model takes."""
        return tuple(self.setting("input_size"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, input_size={self.input_size})"

    # ------------------------------------------------------------------ family hooks
    def build(self, **config: Any) -> nn.Module:
        """The architecture with random weights; ``config`` holds family-specific test overrides."""
        raise NotImplementedError

    def load_weights(self, path: Path) -> nn.Module:
        """Build the architecture and load the weights at ``path`` strictly."""
        raise NotImplementedError

    # ------------------------------------------------------------------ weights
    def weights_path(self, weights: str | os.PathLike[str] | None = "default") -> Path:
        """Resolve ``weights`` to a local path; raises :class:`~builder.weights.WeightsNotFound`."""
        return resolve_weights(self.weights_spec, weights)

    def load(
        self, weights: str | os.PathLike[str] | None = "default", *, random_init: bool = False, **config: Any
    ) -> nn.Module:
        """Return the model in eval mode, also kept as ``self.model`` for :meth:`split`.

        ``weights``: ``"default"`` (or None) resolves the family's file via ``$NVP_WEIGHTS_DIR``
        and the library's offline cache; a path loads that file. ``random_init=True`` is the only
        way to get random weights; only then may ``config`` override the architecture (small test
        configs, e.g. ``image_size=64``); random weights are seeded, hence the same in every process.
        """
        if random_init and weights not in (None, "default"):
            raise ValueError("pass either a weights file or random_init=True, not both")
        if config and not random_init:
            raise ValueError(f"architecture overrides {sorted(config)} are only allowed with random_init=True")
        if random_init:
            # seeded: every process that asks for random weights (adapt, build-repo, tests) gets the same ones
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = self.build(**config)
        else:
            model = self.load_weights(self.weights_path(weights))
        model.eval()
        self.model = model
        return model

    def load_for(self, task: Any, weights: str | os.PathLike[str] | None = "default", *, random_init: bool = False,
                 config: dict[str, Any] | None = None) -> nn.Module:
        """:meth:`load`, then :meth:`prepare_for` the task (a ``builder.tasks.Task`` of this backbone)."""
        model = self.load(weights, random_init=random_init, **(config or {}))
        return self.prepare_for(model, task).eval()

    def prepare_for(self, model: nn.Module, task: Any) -> nn.Module:
        """Family hook: make the loaded model answer ``task`` (default: it does as it is)."""
        return model

    def _model(self, model: nn.Module | None) -> nn.Module:
        m = model if model is not None else self.model
        if m is None:
            raise RuntimeError(f"{self.name}: call load() first (or pass model=)")
        return m

    def num_params(self, model: nn.Module | None = None) -> int:
        """Number of parameters of the loaded model (adapters are reported as a share of it)."""
        return sum(p.numel() for p in self._model(model).parameters())

    # ------------------------------------------------------------------ inputs
    def preprocess(self, frames: Tensor) -> Any:
        """(T, 3, H, W) float frames in [0, 1] -> model input (image backbones: a batch of T images)."""
        x = resize_frames(check_frames(frames), tuple(self.input_size[-2:]))
        return self.normalize(x)

    def preprocess_settings(self) -> dict[str, Any]:
        """The instance's preprocessing state (JSON-able): a model built with a small config resizes differently."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in
                ((k, self.setting(k)) for k in self.preprocess_attrs)}

    def apply_preprocess_settings(self, settings: dict[str, Any]) -> None:
        """Restore :meth:`preprocess_settings` (without loading the model)."""
        unknown = sorted(set(settings) - set(self.preprocess_attrs))
        if unknown:
            raise ValueError(f"{self.name}: unknown preprocessing settings {unknown}; "
                             f"expected {list(self.preprocess_attrs)}")
        self._restored = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` on the channel dim (dim -3 for images, dim 1 for clips)."""
        shape = (3, 1, 1) if x.ndim == 4 else (3, 1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def example_inputs(self, batch: int = 1, input_size: Sequence[int] | None = None) -> Inputs:
        """Random model inputs at ``input_size`` (default: the model's; positional args of ``model``)."""
        return (torch.randn(batch, 3, *(input_size or self.input_size)),)

    # ------------------------------------------------------------------ split
    def split_points(self) -> list[str]:
        """Curated cut names (FX qualnames), early to late."""
        return list(self.curated_cuts)

    def fx_options(self) -> dict[str, Any]:
        """Tracer options: ``leaf_modules`` (types not traced into) and ``autowrap_functions``."""
        return {}

    def _trace(self, model: nn.Module) -> Traced:
        # traced anew each time: models may change (CLIP's set_classifier) and tracing is cheap
        return trace(model, **self.fx_options())

    def node_names(self, model: nn.Module | None = None) -> list[str]:
        """Every module qualname the model can be cut at (the curated ones are a subset)."""
        return fx_node_names(self._trace(self._model(model)))

    def _split_modules(self, model: nn.Module, at: str) -> tuple[nn.Module, nn.Module]:
        try:
            traced = self._trace(model)
        except SplitError:
            # Net(blocks)-style models (pytorchvideo) that do not trace: cut between blocks
            m = re.fullmatch(r"blocks\.(\d+)", at)
            if m is None or not isinstance(getattr(model, "blocks", None), nn.ModuleList):
                raise
            multi = isinstance(self.example_inputs(1)[0], (list, tuple))
            return sequential_split(model.blocks, int(m.group(1)), multi=multi)
        return fx_split(traced, at)

    def cut_names(self, at: str, n: int) -> list[str]:
        """Names of the tensors crossing the cut (lower_snake, used for Triton tensor names)."""
        return ["features"] if n == 1 else [f"features_{i}" for i in range(n)]

    def dynamic_dims(self, at: str, index: int, ndim: int) -> tuple[int, ...]:
        """Dims of cut tensor ``index`` that vary at run time, written -1 in its spec (batch; DETR: also spatial)."""
        return (0,)

    def split(self, at: str | None = None, *, model: nn.Module | None = None) -> SplitModel:
        """Cut the loaded model at ``at`` (default: :attr:`default_cut`)."""
        model = self._model(model)
        at = at or self.default_cut
        front, tail = self._split_modules(model, at)
        front.eval()
        tail.eval()
        with torch.no_grad():
            values = front(*self.example_inputs(1, self.setting("input_size", model)))
        if not isinstance(values, tuple) or not all(isinstance(v, Tensor) for v in values):
            raise SplitError(f"cut {at!r} does not produce tensors: {type(values).__name__}")
        names = self.cut_names(at, len(values))
        cut = []
        for i, (nm, v) in enumerate(zip(names, values, strict=True)):
            dyn = self.dynamic_dims(at, i, v.ndim)
            shape = tuple(-1 if d in dyn else int(s) for d, s in enumerate(v.shape))
            cut.append(TensorSpec(nm, v.dtype, shape))
        return SplitModel(front=front, tail=tail, cut=cut, at=at)

    def feature_shape(self, at: str, input_size: Sequence[int] | None = None,
                      model: nn.Module | None = None) -> list[tuple[int, ...]]:
        """Shapes (batch 1) of the tensors at cut ``at`` for an input of ``input_size`` (default: the model's)."""
        model = self._model(model)
        front, _ = self._split_modules(model, at)
        with torch.no_grad():
            return [tuple(v.shape) for v in front(*self.example_inputs(1, input_size or self.setting("input_size",
                                                                                                     model)))]


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[[], Backbone]] = {}


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: register under ``cls.name``; a duplicate name raises."""
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"backbone {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def list_backbones() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> Backbone:
    """A new :class:`Backbone` instance for ``name`` (nothing is loaded yet)."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}") from None
