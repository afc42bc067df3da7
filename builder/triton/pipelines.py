"""The served repository: per-task NVP ensembles and their two baselines, built from one typed config.

::

    cfg = RepoConfig(store="~/.local/share/nvp/store", tasks=("effnet_lite0",), out="model_repository")
    summary = build_repository(cfg)        # exports ONNX, checks parity, writes <out>/<model>/...

For each task (see :mod:`builder.triton.task_serving` for the request tensors)::

    <task>             <task>_nvp_input -> <task>_tail -> <task>_post
    <task>_fulldecode  <task>_fulldecode_input -> <task>_backbone -> <task>_post
    <task>_codec       <task>_codec_input -> <task>_backbone -> <task>_post

plus ``decode`` (full RGB frames). The post step answers per task kind (``task_serving.POST_OUTPUTS``): top-k
labels with scores (classification, action), boxes with labels in the video's pixels (detection: DETR), captions
(captioning: BLIP's text decoder runs there, with torch; its generate loop has no ONNX form worth serving). The
ONNX models give the raw outputs (logits; DETR's logits and boxes; BLIP's image embeddings).

Backbone tails are exported to ONNX *at the split* (``Backbone.split(layer)``'s
tail, an FX graph module) rather than cut out of a whole-model ONNX graph with onnx-graphsurgeon: the split is the
one the in-process pipeline and the adapters were trained against (tested equal to the full forward), and exporting
it directly keeps names and dynamic axes without graph surgery (batch; for DETR also the frame size, which follows
the video's aspect ratio). Each exported file is run with onnxruntime
against PyTorch before it is written (``parity`` in the summary); a mismatch stops the build.

The injection layer is one per task and repository (an ensemble has one tail): by default the layer most of the
store's videos chose in ``adapt``; each video is served by its stored adapter for that layer.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..nvp import _logits
from ..tasks import SERVED_KINDS
from ..tensor_spec import TensorSpec
from .decode import decode_model_kwargs
from .repository import TARGETS, RepositoryBuilder
from .serving import DEFAULT_MAX_FRAMES
from .specs import DynamicBatching, EnsembleStep, PythonModelSpec
from .task_serving import (
    FRAME_SIZE,
    LOGITS,
    MODEL_OUTPUTS,
    POST_OUTPUTS,
    SELECTED,
    input_names,
    tail_name,
)
from .wire import FRAME_INDICES, FRAME_SELECTION, PATHS, VIDEO_ID

__all__ = ["RepoConfig", "adapted_tasks", "build_repository", "export_onnx", "serving_layer", "SERVED_KINDS"]

_PYTHON_MODELS = Path(__file__).resolve().parent / "python_models"


@dataclass(frozen=True)
class RepoConfig:
    """Everything ``build-repo`` needs; the CLI fills it from its flags."""

    store: Path
    tasks: tuple[str, ...] = ()  # none: only the decode model
    out: Path = Path("model_repository")
    target: Literal["local", "ngc"] = "local"
    layers: Mapping[str, str] = field(default_factory=dict)  # task -> injection layer (default: the videos' choice)
    # task -> weights file (default: the family's), or "random": seeded random weights (tests and plumbing only)
    weights: Mapping[str, str] = field(default_factory=dict)
    backbone_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # random weights only
    baselines: bool = True  # also <task>_fulldecode and <task>_codec
    top_k: int = 5
    score_threshold: float = 0.5  # detection: boxes scoring above it are answered (DETR's post-processing default)
    max_frames: int = 64  # frames per request, and the largest batch the ONNX models accept
    queue_delay_us: int = 2000  # dynamic batching: how long a request may wait for others
    instances: int = 1
    cache_size: int = 32
    tensorrt: bool = True  # ngc: the TensorRT execution accelerator (FP16) on the ONNX models
    parity_tol: float = 1e-3  # max |onnxruntime - torch| relative to the output's scale

    def __post_init__(self) -> None:
        from ..tasks import get_task

        object.__setattr__(self, "store", Path(self.store).expanduser())
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(self.tasks)))
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        for t in self.tasks:
            kind = get_task(t).kind
            if kind not in SERVED_KINDS:
                raise ValueError(f"task {t!r} ({kind}) cannot be served: ensembles exist for {SERVED_KINDS}")
        unknown = sorted(set(self.layers) - set(self.tasks))
        if unknown:
            raise ValueError(f"--layer names task(s) {unknown} that are not being built")
        unknown = sorted(set(self.weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"--weights names task(s) {unknown} that are not being built")
        fixed = sorted(t for t in self.backbone_config if self.weights.get(t) != "random")
        if fixed:
            raise ValueError(f"backbone_config (small architectures) needs random weights; {fixed} have real ones")
        if min(self.top_k, self.max_frames, self.instances, self.cache_size) < 1 or self.queue_delay_us < 0:
            raise ValueError("top_k, max_frames, instances and cache_size must be >= 1; queue_delay_us >= 0")
        if not 0 <= self.score_threshold < 1:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def serving_layer(store: Any, task: str, override: str | None = None) -> tuple[str, dict[str, str]]:
    """The injection layer the task's tail starts at, and each adapted video's own choice (ID -> layer)."""
    from ..nvp import pairing_file

    chosen = {}
    for entry in store.list():
        if "error" in entry:
            continue
        try:
            chosen[entry["id"]] = json.loads(store.get(entry["id"], pairing_file(task)))["layer"]
        except KeyError:  # never adapted for this task
            continue
    if override:
        return override, chosen
    if not chosen:
        raise ValueError(f"no video in the store {store.root} has {task} adapters: run 'python -m builder adapt ID "
                         f"--task {task}' first (or pass --layer {task}=LAYER)")
    return Counter(chosen.values()).most_common(1)[0][0], chosen


def adapted_tasks(store: Any) -> list[str]:
    """Servable tasks that at least one stored video has adapters for (``build-repo``'s default)."""
    from ..nvp import pairing_file
    from ..tasks import TASKS

    names = set()
    for entry in store.list():
        files = [] if "error" in entry else store.entry(entry["id"])["files"]
        names.update(t for t, spec in TASKS.items() if spec.kind in SERVED_KINDS and pairing_file(t) in files)
    return [t for t in TASKS if t in names]


class _Outputs(nn.Module):
    """A backbone (or tail) as an ONNX-exportable function of positional tensors returning its task's raw outputs
    (:data:`~builder.triton.task_serving.MODEL_OUTPUTS`): logits; DETR's (logits, pred_boxes); BLIP's image
    embeddings."""

    def __init__(self, model: nn.Module, kind: str, as_list: bool = False) -> None:
        super().__init__()
        self.model, self.kind, self.as_list = model, kind, as_list

    def forward(self, *x: Tensor) -> Tensor | tuple[Tensor, ...]:
        out = self.model(list(x)) if self.as_list else self.model(*x)
        return _logits(out) if self.kind in ("classification", "action") else out


def _as_tuple(out: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    return (out,) if isinstance(out, Tensor) else tuple(out)


def export_onnx(module: nn.Module, args: Sequence[Tensor], input_names: Sequence[str], output_names: Sequence[str],
                path: Path, check_args: Sequence[Tensor] | None = None, tol: float = 1e-3,
                dynamic: Sequence[Sequence[int]] | None = None) -> float:
    """Export ``module(*args)`` (torch's default exporter) with dynamic dims ``dynamic[i]`` for input ``i`` (default:
    the batch axis only) and check every output with onnxruntime on ``check_args`` (another batch size, and another
    frame size where the dims allow). Returns the max abs difference relative to each output's scale; raises
    ``ValueError`` above ``tol``."""
    import onnxruntime as ort

    module.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    dims = dynamic or [(0,)] * len(args)
    # forward(*x): one spec per positional tensor. The batch is shared by name; other dims are left to the exporter
    # (AUTO), which finds the ones that must stay equal (DETR's features and mask share their spatial size)
    spec = tuple({d: batch if d == 0 else torch.export.Dim.AUTO for d in ds} for ds in dims)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), str(path), input_names=list(input_names),
                          output_names=list(output_names), opset_version=18, verbose=False, external_data=False,
                          dynamic_shapes=(spec,))
    check = tuple(check_args if check_args is not None else args)
    with torch.no_grad():
        refs = [r.float().numpy() for r in _as_tuple(module(*check))]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(output_names), {n: t.numpy() for n, t in zip(input_names, check)})
    err = 0.0
    for name, g, ref in zip(output_names, got, refs):
        if g.shape != ref.shape:
            raise ValueError(f"{path.name}: onnxruntime output '{name}' shape {g.shape} != PyTorch {ref.shape}")
        err = max(err, float(abs(g - ref).max() / max(1e-6, float(abs(ref).max()))))
    if err > tol:
        raise ValueError(f"{path.name}: onnxruntime differs from PyTorch by {err:.2e} (relative) > {tol:.0e}")
    return err


def _example_inputs(bb: Any, task: Any, batch: int, size: tuple[int, int] = (48, 64)) -> tuple[Tensor, ...]:
    """Preprocessed pixels shaped like served requests: ``batch`` frames of ``size``, or ``batch`` clips of the
    task's length."""
    if task.kind == "action":
        clips = [bb.preprocess(torch.rand(task.clip, 3, *size)) for _ in range(batch)]
        if isinstance(clips[0], (list, tuple)):
            return tuple(torch.cat([c[i] for c in clips]) for i in range(len(clips[0])))
        return (torch.cat(clips),)
    x = bb.preprocess(torch.rand(batch, 3, *size))
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _spec(name: str, dtype: Any, shape: Sequence[int]) -> TensorSpec:
    return TensorSpec(name, dtype, tuple(int(d) for d in shape))


def _tensor_spec(name: str, t: Tensor, dynamic: Sequence[int] = (0,), batched: bool = True) -> TensorSpec:
    """``t``'s spec with its ``dynamic`` dims as -1; without its batch dim when ``batched`` (the model batches)."""
    shape = [-1 if d in dynamic else n for d, n in enumerate(t.shape)]
    return _spec(name, t.dtype, shape[1:] if batched else shape)


def _answer_specs(kind: str) -> dict[str, TensorSpec]:
    """What a post step answers besides the model outputs it passes through (see ``task_serving.POST_OUTPUTS``)."""
    def s(name: str, dtype: str, *shape: int) -> tuple[str, TensorSpec]:
        return name, _spec(name, dtype, shape)

    answers = {
        "classification": [s("labels", "TYPE_STRING", -1), s("scores", "TYPE_FP32", -1),
                           s("frame_labels", "TYPE_STRING", -1), s("frame_scores", "TYPE_FP32", -1)],
        "detection": [s("boxes", "TYPE_FP32", -1, 4), s("labels", "TYPE_STRING", -1), s("scores", "TYPE_FP32", -1),
                      s("box_frames", "TYPE_INT64", -1)],
        "captioning": [s("caption", "TYPE_STRING", 1), s("captions", "TYPE_STRING", -1)],
    }
    answers["action"] = answers["classification"]
    return dict(answers[kind])


def build_repository(cfg: RepoConfig, *, progress: bool = True) -> dict[str, Any]:
    """Export, check and write the repository described by ``cfg``; returns a summary (also written as
    ``<out>/nvp_repository.json``)."""
    from tqdm.auto import tqdm

    from ..store import VideoStore

    store = VideoStore(cfg.store)
    repo = RepositoryBuilder(cfg.out)
    repo.add_python(**decode_model_kwargs(cfg.store, cfg.target, cache_size=cfg.cache_size, instances=cfg.instances,
                                          max_frames=DEFAULT_MAX_FRAMES))
    summary: dict[str, Any] = {"config": cfg.to_dict(), "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="nvp-build-") as tmp:
        for name in tqdm(cfg.tasks, desc="build-repo", disable=not progress):
            summary["tasks"][name] = _add_task(repo, cfg, store, name, Path(tmp))
        out = repo.build(clean=True)
    summary["models"] = sorted(repo.models)
    (out / "nvp_repository.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def _add_task(repo: RepositoryBuilder, cfg: RepoConfig, store: Any, name: str, tmp: Path) -> dict[str, Any]:
    """Export one task's ONNX models and add its input, post and ensemble models; returns its summary."""
    from ..backbones import get_backbone
    from ..nvp import load_task_model
    from ..tasks import class_names, get_task

    task = get_task(name)
    kind = task.kind
    bb = get_backbone(name)
    ngc = cfg.target == "ngc"
    instance_kind = "KIND_GPU" if ngc else "KIND_CPU"
    weights = cfg.weights.get(name, "default")
    random_init = weights == "random"
    model = load_task_model(bb, task, None if random_init else weights, random_init,
                            dict(cfg.backbone_config.get(name, {})))
    layer, chosen = serving_layer(store, name, cfg.layers.get(name))
    sm = bb.split(layer, model=model)
    # the check runs another batch size and another frame size: dims the exporter fixed by mistake fail it
    pixels, pixels_check = _example_inputs(bb, task, 2), _example_inputs(bb, task, 3, (40, 56))
    with torch.no_grad():
        feats, feats_check = sm.head(*pixels), sm.head(*pixels_check)
    multi = len(pixels) > 1  # SlowFast: the model takes its pathways as one list
    f_names, p_names = input_names("nvp", len(feats)), input_names("codec", len(pixels))
    f_dyn = [bb.dynamic_dims(layer, i, f.ndim) for i, f in enumerate(feats)]
    p_dyn = [bb.dynamic_input_dims] * len(pixels)
    model_outs = MODEL_OUTPUTS[kind]
    tail = _Outputs(sm.tail, kind)
    with torch.no_grad():
        example_outs = dict(zip(model_outs, _as_tuple(tail(*feats))))
    parity = {"tail": export_onnx(tail, feats, f_names, model_outs, tmp / f"{name}_tail.onnx", feats_check,
                                  cfg.parity_tol, f_dyn)}
    if cfg.baselines:
        parity["backbone"] = export_onnx(_Outputs(model, kind, multi), pixels, p_names, model_outs,
                                         tmp / f"{name}_backbone.onnx", pixels_check, cfg.parity_tol, p_dyn)
    # batching: frames for image tasks, clips for action tasks (each clip already holds 32 frames)
    mbs = cfg.max_frames if kind != "action" else max(1, cfg.max_frames // task.clip)
    onnx_kw = dict(max_batch_size=mbs, instances=cfg.instances, kind=instance_kind,
                   dynamic_batching=DynamicBatching(max_queue_delay_microseconds=cfg.queue_delay_us),
                   runtime="onnxruntime" if ngc else "python", tensorrt=ngc and cfg.tensorrt)
    out_specs = [_tensor_spec(o, t) for o, t in example_outs.items()]
    repo.add_onnx(f"{name}_tail", tmp / f"{name}_tail.onnx",
                  [_tensor_spec(n, f, d) for n, f, d in zip(f_names, feats, f_dyn)], out_specs, **onnx_kw)
    if cfg.baselines:
        repo.add_onnx(f"{name}_backbone", tmp / f"{name}_backbone.onnx",
                      [_tensor_spec(n, p, d) for n, p, d in zip(p_names, pixels, p_dyn)], out_specs, **onnx_kw)

    # post-processing: the model outputs (under their ensemble names) and the selected frames in; the answer out
    detection = kind == "detection"
    raw = {o: _tensor_spec(o, t, batched=False) for o, t in example_outs.items()}
    answers = {**_answer_specs(kind), **raw, FRAME_INDICES: _spec(FRAME_INDICES, "TYPE_INT64", [-1])}
    post_outs = [answers[o] for o in POST_OUTPUTS[kind]]
    post_ins = [_spec(tail_name(o), r.dtype, r.shape) for o, r in raw.items()]
    post_ins.append(_spec(SELECTED, "TYPE_INT64", [-1]))
    extra = [_spec(FRAME_SIZE, "TYPE_INT64", [2])] if detection else []
    post_params = {"task": name}
    files = {}
    if kind == "captioning":  # the text decoder runs in the post step, from the same weights
        post_params.update(weights=weights if weights in ("default", "random") or ngc
                           else str(Path(weights).expanduser().resolve()),
                           backbone_config=json.dumps(dict(cfg.backbone_config.get(name, {}))))
        num_classes = None
    else:
        logits = example_outs[LOGITS]
        num_classes = int(logits.shape[-1]) - (1 if detection else 0)  # DETR's last class is "no object"
        labels = tmp / f"{name}_labels.json"
        labels.write_text(json.dumps(class_names(task, num_classes)), encoding="utf-8")
        files["labels.json"] = labels
        post_params.update({"threshold": str(cfg.score_threshold)} if detection else {"top_k": str(cfg.top_k)})
    repo.add(PythonModelSpec(name=f"{name}_post", source=_PYTHON_MODELS / "task_post" / "model.py",
                             inputs=(*post_ins, *extra), outputs=tuple(post_outs), files=files,
                             parameters=post_params, instances=cfg.instances,
                             kind=instance_kind if kind == "captioning" else "KIND_CPU"))

    vid_t = _spec(VIDEO_ID, "TYPE_STRING", [1])
    sel_t = _spec(FRAME_SELECTION, "TYPE_STRING", [1])
    store_param = str(cfg.store) if ngc else str(cfg.store.resolve())
    modes = PATHS if cfg.baselines else ("nvp",)
    for mode in modes:
        outs, names, dyn = (feats, f_names, f_dyn) if mode == "nvp" else (pixels, p_names, p_dyn)
        params = {"store_root": store_param, "task": name, "mode": mode, "layer": layer if mode == "nvp" else "",
                  "preprocess": json.dumps(bb.preprocess_settings()), "cache_size": str(cfg.cache_size),
                  "max_frames": str(cfg.max_frames)}
        repo.add_python(f"{name}_{mode}_input", _PYTHON_MODELS / "task_input" / "model.py", [vid_t, sel_t],
                        [*(_tensor_spec(n, o, d, batched=False) for n, o, d in zip(names, outs, dyn)),
                         _spec(FRAME_INDICES, "TYPE_INT64", [-1]), *extra],
                        parameters=params, instances=cfg.instances, kind=instance_kind)
        second = f"{name}_tail" if mode == "nvp" else f"{name}_backbone"
        passed = {FRAME_SIZE: FRAME_SIZE} if detection else {}
        repo.add_ensemble(name if mode == "nvp" else f"{name}_{mode}", [
            EnsembleStep(f"{name}_{mode}_input", {VIDEO_ID: VIDEO_ID, FRAME_SELECTION: FRAME_SELECTION},
                         {**{n: n for n in names}, FRAME_INDICES: SELECTED, **passed}),
            EnsembleStep(second, {n: n for n in names}, {o: tail_name(o) for o in model_outs}),
            EnsembleStep(f"{name}_post", {**{tail_name(o): tail_name(o) for o in model_outs}, SELECTED: SELECTED,
                                          **passed}, {o: o for o in POST_OUTPUTS[kind]}),
        ], [vid_t, sel_t], post_outs)
    return {
        "kind": kind, "layer": layer, "num_classes": num_classes, "parity": parity,
        "preprocess": bb.preprocess_settings(), "weights": weights,
        "outputs": {o: list(t.shape[1:]) for o, t in example_outs.items()},
        "videos": sorted(v for v, l in chosen.items() if l == layer),
        "other_layer": sorted(v for v, l in chosen.items() if l != layer),
        "ensembles": [name] + ([f"{name}_fulldecode", f"{name}_codec"] if cfg.baselines else []),
    }
