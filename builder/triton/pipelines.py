"""The served repository: per-task NVP ensembles and their two baselines, built from one typed config.

::

    cfg = RepoConfig(store="~/.local/share/nvp/store", tasks=("effnet_lite0",), out="model_repository")
    summary = build_repository(cfg)        # exports ONNX, checks parity, writes <out>/<model>/...

For each task (see :mod:`builder.triton.task_serving` for the request tensors)::

    <task>             <task>_nvp_input -> <task>_tail -> <task>_post
    <task>_fulldecode  <task>_fulldecode_input -> <task>_backbone -> <task>_post
    <task>_codec       <task>_codec_input -> <task>_backbone -> <task>_post

plus ``decode`` (full RGB frames). Backbone tails are exported to ONNX *at the split* (``Backbone.split(layer)``'s
tail, an FX graph module) rather than cut out of a whole-model ONNX graph with onnx-graphsurgeon: the split is the
one the in-process pipeline and the adapters were trained against (tested equal to the full forward), and exporting
it directly keeps names and dynamic batch axes without graph surgery. Each exported file is run with onnxruntime
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
from .repository import TARGETS, RepositoryBuilder, decode_model_kwargs
from .serving import DEFAULT_MAX_FRAMES, FRAME_INDICES, VIDEO_ID
from .specs import DynamicBatching, EnsembleStep, PythonModelSpec, TensorSpec
from .task_serving import FRAME_SELECTION, LOGITS, MODES, POST_OUTPUTS, TAIL_LOGITS, input_names

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
                raise ValueError(f"task {t!r} ({kind}) cannot be served yet: ensembles exist for classification "
                                 f"and action tasks")
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


class _Logits(nn.Module):
    """A backbone (or tail) as an ONNX-exportable function of positional tensors returning the task's logits."""

    def __init__(self, model: nn.Module, as_list: bool = False) -> None:
        super().__init__()
        self.model, self.as_list = model, as_list

    def forward(self, *x: Tensor) -> Tensor:
        return _logits(self.model(list(x)) if self.as_list else self.model(*x))


def export_onnx(module: nn.Module, args: Sequence[Tensor], input_names: Sequence[str], output_names: Sequence[str],
                path: Path, check_args: Sequence[Tensor] | None = None, tol: float = 1e-3) -> float:
    """Export ``module(*args)`` with a dynamic batch axis (torch's default exporter) and check it with
    onnxruntime on ``check_args`` (another batch size). Returns the max abs difference relative to the output's
    scale; raises ``ValueError`` above ``tol``."""
    import onnxruntime as ort

    module.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), str(path), input_names=list(input_names),
                          output_names=list(output_names), opset_version=18, verbose=False, external_data=False,
                          # forward(*x): one spec per positional tensor, all sharing the batch dimension
                          dynamic_shapes=(tuple({0: batch} for _ in args),))
    check = tuple(check_args if check_args is not None else args)
    with torch.no_grad():
        ref = module(*check).float().numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(output_names), {n: t.numpy() for n, t in zip(input_names, check)})[0]
    if got.shape != ref.shape:
        raise ValueError(f"{path.name}: onnxruntime output shape {got.shape} != PyTorch {ref.shape}")
    err = float(abs(got - ref).max() / max(1e-6, float(abs(ref).max())))
    if err > tol:
        raise ValueError(f"{path.name}: onnxruntime differs from PyTorch by {err:.2e} (relative) > {tol:.0e}")
    return err


def _example_inputs(bb: Any, task: Any, batch: int) -> tuple[Tensor, ...]:
    """Preprocessed pixels shaped like served requests: ``batch`` frames, or ``batch`` clips of the task's length."""
    if task.kind == "action":
        clips = [bb.preprocess(torch.rand(task.clip, 3, 48, 64)) for _ in range(batch)]
        if isinstance(clips[0], (list, tuple)):
            return tuple(torch.cat([c[i] for c in clips]) for i in range(len(clips[0])))
        return (torch.cat(clips),)
    x = bb.preprocess(torch.rand(batch, 3, 48, 64))
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _spec(name: str, dtype: str, shape: Sequence[int]) -> TensorSpec:
    return TensorSpec(name, dtype, tuple(int(d) for d in shape))


def build_repository(cfg: RepoConfig, *, progress: bool = True) -> dict[str, Any]:
    """Export, check and write the repository described by ``cfg``; returns a summary (also written as
    ``<out>/nvp_repository.json``)."""
    from tqdm.auto import tqdm

    from ..backbones import get_backbone
    from ..nvp import load_task_model
    from ..store import VideoStore
    from ..tasks import class_names, get_task

    store = VideoStore(cfg.store)
    ngc = cfg.target == "ngc"
    kind = "KIND_GPU" if ngc else "KIND_CPU"
    store_param = str(cfg.store) if ngc else str(cfg.store.resolve())
    repo = RepositoryBuilder(cfg.out)
    repo.add_python(**decode_model_kwargs(cfg.store, cfg.target, cache_size=cfg.cache_size, instances=cfg.instances,
                                          max_frames=DEFAULT_MAX_FRAMES))
    summary: dict[str, Any] = {"config": cfg.to_dict(), "tasks": {}}
    vid_t = _spec(VIDEO_ID, "TYPE_STRING", [1])
    sel_t = _spec(FRAME_SELECTION, "TYPE_STRING", [1])
    idx_t = _spec(FRAME_INDICES, "TYPE_INT64", [-1])
    with tempfile.TemporaryDirectory(prefix="nvp-build-") as tmp:
        for name in tqdm(cfg.tasks, desc="build-repo", disable=not progress):
            task = get_task(name)
            bb = get_backbone(name)
            weights = cfg.weights.get(name, "default")
            random_init = weights == "random"
            model = load_task_model(bb, task, None if random_init else weights, random_init,
                                    dict(cfg.backbone_config.get(name, {})))
            layer, chosen = serving_layer(store, name, cfg.layers.get(name))
            sm = bb.split(layer, model=model)
            pixels, pixels_check = _example_inputs(bb, task, 2), _example_inputs(bb, task, 3)
            with torch.no_grad():
                feats, feats_check = sm.head(*pixels), sm.head(*pixels_check)
            multi = len(pixels) > 1  # SlowFast: the model takes its pathways as one list
            f_names, p_names = input_names("nvp", len(feats)), input_names("codec", len(pixels))
            with torch.no_grad():
                num_classes = int(_Logits(sm.tail)(*feats).shape[-1])
            parity = {
                "tail": export_onnx(_Logits(sm.tail), feats, f_names, [LOGITS], Path(tmp) / f"{name}_tail.onnx",
                                    feats_check, cfg.parity_tol)}
            if cfg.baselines:
                parity["backbone"] = export_onnx(_Logits(model, multi), pixels, p_names, [LOGITS],
                                                 Path(tmp) / f"{name}_backbone.onnx", pixels_check, cfg.parity_tol)
            # batching: frames for image tasks, clips for action tasks (each clip already holds 32 frames)
            mbs = cfg.max_frames if task.kind != "action" else max(1, cfg.max_frames // task.clip)
            batching = DynamicBatching(max_queue_delay_microseconds=cfg.queue_delay_us)
            logits_t = _spec(LOGITS, "TYPE_FP32", [num_classes])
            onnx_kw = dict(max_batch_size=mbs, instances=cfg.instances, kind=kind, dynamic_batching=batching,
                           runtime="onnxruntime" if ngc else "python", tensorrt=ngc and cfg.tensorrt)
            repo.add_onnx(f"{name}_tail", Path(tmp) / f"{name}_tail.onnx",
                          [_spec(n, "TYPE_FP32", f.shape[1:]) for n, f in zip(f_names, feats)], [logits_t],
                          **onnx_kw)
            post_outs = [_spec(o, "TYPE_STRING" if "labels" in o else "TYPE_FP32", [-1]) for o in POST_OUTPUTS[:-1]]
            post_outs.append(_spec(LOGITS, "TYPE_FP32", [-1, num_classes]))
            labels = Path(tmp) / f"{name}_labels.json"
            labels.write_text(json.dumps(class_names(task, num_classes)), encoding="utf-8")
            repo.add(PythonModelSpec(name=f"{name}_post", source=_PYTHON_MODELS / "task_post" / "model.py",
                                     inputs=(_spec(TAIL_LOGITS, "TYPE_FP32", [-1, num_classes]),),
                                     outputs=tuple(post_outs), files={"labels.json": labels},
                                     parameters={"task": name, "top_k": str(cfg.top_k)}, instances=cfg.instances))
            modes = MODES if cfg.baselines else ("nvp",)
            if cfg.baselines:
                repo.add_onnx(f"{name}_backbone", Path(tmp) / f"{name}_backbone.onnx",
                              [_spec(n, "TYPE_FP32", p.shape[1:]) for n, p in zip(p_names, pixels)], [logits_t],
                              **onnx_kw)
            for mode in modes:
                outs, names = (feats, f_names) if mode == "nvp" else (pixels, p_names)
                params = {"store_root": store_param, "task": name, "mode": mode, "layer": layer if mode == "nvp"
                          else "", "input_size": json.dumps(list(bb.input_size)), "cache_size": str(cfg.cache_size),
                          "max_frames": str(cfg.max_frames)}
                repo.add_python(f"{name}_{mode}_input", _PYTHON_MODELS / "task_input" / "model.py", [vid_t, sel_t],
                                [*(_spec(n, "TYPE_FP32", [-1, *o.shape[1:]]) for n, o in zip(names, outs)), idx_t],
                                parameters=params, instances=cfg.instances, kind=kind)
                second = f"{name}_tail" if mode == "nvp" else f"{name}_backbone"
                repo.add_ensemble(name if mode == "nvp" else f"{name}_{mode}", [
                    EnsembleStep(f"{name}_{mode}_input", {VIDEO_ID: VIDEO_ID, FRAME_SELECTION: FRAME_SELECTION},
                                 {**{n: n for n in names}, FRAME_INDICES: FRAME_INDICES}),
                    EnsembleStep(second, {n: n for n in names}, {LOGITS: TAIL_LOGITS}),
                    EnsembleStep(f"{name}_post", {TAIL_LOGITS: TAIL_LOGITS}, {o: o for o in POST_OUTPUTS}),
                ], [vid_t, sel_t], [*post_outs, idx_t])
            summary["tasks"][name] = {
                "kind": task.kind, "layer": layer, "num_classes": num_classes, "parity": parity,
                "input_size": list(bb.input_size), "weights": weights,
                "videos": sorted(v for v, l in chosen.items() if l == layer),
                "other_layer": sorted(v for v, l in chosen.items() if l != layer),
                "ensembles": [name] + ([f"{name}_fulldecode", f"{name}_codec"] if cfg.baselines else []),
            }
        out = repo.build(clean=True)
    summary["models"] = sorted(repo.models)
    (out / "nvp_repository.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
