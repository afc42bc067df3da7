"""The served repository: per-task NVP ensembles and their two baselines, built from one typed config.

::

    cfg = RepoConfig(store="~/.local/share/nvp/store", tasks=("effnet_lite0",), out="model_repository")
    summary = build_repository(cfg)        # exports ONNX, checks parity, writes <out>/<model>/...

For each task (see :mod:`builder.triton.task_serving` for the request tensors)::

    <task>             nvp_input -> <task>_tail -> <task>_post
    <task>_fulldecode  fulldecode_input -> <task>_backbone -> <task>_post
    <task>_codec       codec_input -> <task>_backbone -> <task>_post

Each path's input model is one for every task (it answers ``<task>.<tensor>`` and computes only the tasks an
ensemble step asks for): one INR cache per server process, whatever the number of tasks.

With ``--fuse`` (``RepoConfig.fuse``, ``--target local``) each of these ensembles (and each group's) is instead one
Python-backend model that runs the same steps in one process (:meth:`RepositoryBuilder.fuse`,
:mod:`builder.triton.chain`), with at least :data:`FUSED_INSTANCES` instances.

Also ``decode`` (full RGB frames), and per task group (``groups``, ``build-repo --multi NAME=T1,T2``) the
ensemble ``NAME``: ``nvp_input`` asked for all its tasks (the INR prefix once, each task's adapter) -> each task's
own ``<task>_tail`` -> ``<task>_post`` in parallel branches (:mod:`builder.triton.multi`). Per D-NeRV collection (``collections``,
``build-repo --collection ID``) ``<ID>_decode``, and per task the collection was adapted for (``adapt ID``) the
ensemble ``<ID>_<task>``: the shared decoder's prefix and the collection's adapter as one ONNX model, then the
task's own tail and post (:mod:`builder.triton.collection_prefix`). The post step answers as the task's kind says
(``builder.tasks``: its ``answers``, ``post_parameters`` and ``post_handler``): top-k labels with scores
(classification, action), boxes with labels in the video's pixels (detection: DETR), captions (captioning: BLIP's
text decoder runs there, with torch; its generate loop has no ONNX form worth serving). The ONNX models give the
kind's ``model_outputs`` (logits; DETR's logits and boxes; BLIP's image embeddings).

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

from ..backbones import Backbone, SplitModel, get_backbone
from ..nvp.storage import load_adapter, load_pairing, pairing_file, record_served_layers, stored_exits
from ..store import VideoStore
from ..tasks import TASKS, Task, TaskKind, class_names, get_task
from ..tensor_spec import TensorSpec
from .decode import decode_model_kwargs
from .multi import TaskGroup, group_feature_names, shared_exit
from .repository import TARGETS, RepositoryBuilder
from .serving import RequestError, ServingLimits
from .specs import DynamicBatching, EnsembleStep, PythonModelSpec, QueuePolicy
from .task_serving import FRAME_SIZE, SELECTED, choose_adapter, input_names, tail_name
from .wire import FRAME_INDICES, FRAME_SELECTION, PATHS, VIDEO_ID, task_output

__all__ = ["RepoConfig", "TaskGroup", "adapted_tasks", "build_repository", "export_onnx", "serving_layer"]

_PYTHON_MODELS = Path(__file__).resolve().parent / "python_models"
# A Python-backend model answers before Triton frees its instance; in 2.51 a client request that arrives in that
# window waits out the scheduler's 500 ms idle timeout (measured: 3-12 % of back-to-back requests to a fused model
# with one instance, 0 with two). A second instance is free whenever the first is finishing.
FUSED_INSTANCES = 2


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
    limits: ServingLimits = ServingLimits()  # what one request may cost every reachable model (docs/SERVING.md)
    # D-NeRV collections served by a static ONNX decoder: <collection>_decode (lookup -> decoder -> gather)
    collections: tuple[str, ...] = ()
    # multi-task ensembles: each answers its tasks from one INR prefix (builder.triton.multi)
    groups: tuple[TaskGroup, ...] = ()
    # local: serve each task's and group's ensemble as one Python-backend model running the same steps in one
    # process (no inter-process hop, no step model reachable by clients); the default keeps every step a model
    fuse: bool = False

    @property
    def fused(self) -> bool:
        """Whether task and group ensembles are served fused (``--fuse`` on ``--target local``; on ``ngc`` the ONNX
        steps run on Triton's onnxruntime/TensorRT backends, so every step stays a model)."""
        return self.target == "local" and self.fuse

    def __post_init__(self) -> None:
        object.__setattr__(self, "store", Path(self.store).expanduser())
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(self.tasks)))
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        for t in self.tasks:
            kind = get_task(t).kind
            if not kind.served:
                raise ValueError(f"task {t!r} ({kind.name}) cannot be served: no ensembles exist for its kind")
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
        object.__setattr__(self, "groups", tuple(self.groups))
        names = [g.name for g in self.groups]
        for g in self.groups:
            missing = [t for t in g.tasks if t not in self.tasks]
            if missing:
                raise ValueError(f"--multi {g.name} needs task(s) {missing} built too (its branches run their "
                                 "tail and post models): add them to --tasks")
            if names.count(g.name) > 1 or g.name in self.tasks or g.name in ("decode", *map(input_model, PATHS)):
                raise ValueError(f"--multi {g.name}: the name is taken (by another group, a task, 'decode' or an "
                                 "input model); choose another")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @property
    def queue(self) -> QueuePolicy:
        """The queue bound of every model in the repository (ensembles queue in their steps)."""
        return QueuePolicy(self.limits.max_queue_size, self.limits.queue_timeout_ms * 1000)

    def limit_parameters(self) -> dict[str, str]:
        """The request limits every Python-backend model of the repository checks (serving.RequestLimits)."""
        return self.limits.parameters(self.max_frames)


def serving_layer(store: Any, task: str, override: str | None = None) -> tuple[str, dict[str, str]]:
    """The injection layer the task's tail starts at, and each adapted video's own choice (ID -> layer)."""
    chosen = {}
    for entry in store.list():
        if "error" in entry or entry.get("kind") == "collection":  # a collection's adapters answer its members
            continue
        try:
            chosen[entry["id"]] = load_pairing(store, entry["id"], task)["layer"]
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
    names = set()
    for entry in store.videos().values():
        if isinstance(entry, Exception):  # unreadable entries are reported by `list`, not served
            continue
        names.update(t for t in entry.tasks() if t in TASKS and TASKS[t].kind.served and pairing_file(t) in entry.files)
    return [t for t in TASKS if t in names]


class _Outputs(nn.Module):
    """A backbone (or tail) as an ONNX-exportable function of positional tensors returning its task kind's
    ``model_outputs``: logits; DETR's (logits, pred_boxes); BLIP's image embeddings."""

    def __init__(self, model: nn.Module, kind: TaskKind, as_list: bool = False) -> None:
        super().__init__()
        self.model, self.kind, self.as_list = model, kind, as_list

    def forward(self, *x: Tensor) -> Tensor | tuple[Tensor, ...]:
        out = self.model(list(x)) if self.as_list else self.model(*x)
        return self.kind.served_outputs(out)


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


def _example_inputs(bb: Backbone, task: Task, batch: int, size: tuple[int, int] = (48, 64)) -> tuple[Tensor, ...]:
    """Preprocessed pixels shaped like served requests: ``batch`` frames of ``size``, or ``batch`` clips of the
    task's length."""
    if task.video:
        clips = [bb.preprocess(torch.rand(task.clip, 3, *size)) for _ in range(batch)]
        if isinstance(clips[0], (list, tuple)):
            return tuple(torch.cat([c[i] for c in clips]) for i in range(len(clips[0])))
        return (torch.cat(clips),)
    x = bb.preprocess(torch.rand(batch, 3, *size))
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _spec(name: str, dtype: Any, shape: Sequence[int]) -> TensorSpec:
    return TensorSpec(name, dtype, tuple(int(d) for d in shape))


def _request() -> list[TensorSpec]:
    """What a client sends every task ensemble (and a group's): a video ID and a frame selection."""
    return [_spec(VIDEO_ID, "TYPE_STRING", [1]), _spec(FRAME_SELECTION, "TYPE_STRING", [1])]


def _tensor_spec(name: str, t: Tensor, dynamic: Sequence[int] = (0,), batched: bool = True) -> TensorSpec:
    """``t``'s spec with its ``dynamic`` dims as -1; without its batch dim when ``batched`` (the model batches)."""
    shape = [-1 if d in dynamic else n for d, n in enumerate(t.shape)]
    return _spec(name, t.dtype, shape[1:] if batched else shape)


def build_repository(cfg: RepoConfig, *, progress: bool = True) -> dict[str, Any]:
    """Export, check and write the repository described by ``cfg``; returns a summary (also written as
    ``<out>/nvp_repository.json``)."""
    from tqdm.auto import tqdm

    store = VideoStore(cfg.store)
    repo = RepositoryBuilder(cfg.out)
    decode = decode_model_kwargs(cfg.store, cfg.target, cache_size=cfg.cache_size, instances=cfg.instances,
                                 max_frames=cfg.max_frames)
    repo.add_python(**{**decode, "parameters": {**decode["parameters"], **cfg.limit_parameters()}},
                    queue=cfg.queue)
    summary: dict[str, Any] = {"config": cfg.to_dict(), "tasks": {}}
    exports: dict[str, _Export] = {}
    with tempfile.TemporaryDirectory(prefix="nvp-build-") as tmp:
        inputs = _Inputs()
        for name in tqdm(cfg.tasks, desc="build-repo", disable=not progress):
            summary["tasks"][name], exports[name] = _add_task(repo, cfg, store, name, Path(tmp), inputs)
        inputs.build(repo, cfg)  # one input model per path, for every task: one INR cache per server process
        summary["collections"] = {c: _add_collection(repo, cfg, store, c, Path(tmp), exports)
                                  for c in cfg.collections}
        summary["groups"] = {g.name: _add_group(repo, cfg, store, g, summary["tasks"]) for g in cfg.groups}
        if cfg.fused:
            for name in [e for t in summary["tasks"].values() for e in t["ensembles"]] + list(summary["groups"]):
                repo.fuse(name, instances=max(FUSED_INSTANCES, cfg.instances))
        out = repo.build(clean=True)
    # adapt fits videos added later at these layers, so a running server answers them (hot-add)
    record_served_layers(store, {t: s["layer"] for t, s in summary["tasks"].items()})
    summary["models"] = sorted(repo.models)
    (out / "nvp_repository.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


# --- one task: small builders driven by its kind ------------------------------------------------------------

@dataclass
class _Export:
    """One task as exported: the backbone split at the served layer, and example tensors shaped like requests
    (``*_check``: another batch and frame size, for the parity check)."""

    task: Task
    bb: Backbone
    model: nn.Module
    weights: str
    layer: str
    chosen: dict[str, str]  # video ID -> the layer its adapt chose
    split: SplitModel
    pixels: tuple[Tensor, ...]
    pixels_check: tuple[Tensor, ...]
    feats: tuple[Tensor, ...]
    feats_check: tuple[Tensor, ...]
    outputs: dict[str, Tensor] = field(default_factory=dict)  # the tail's raw outputs on ``feats``, by name

    @property
    def kind(self) -> TaskKind:
        return self.task.kind

    def tensors(self, mode: str) -> tuple[tuple[Tensor, ...], list[str], list[tuple[int, ...]]]:
        """What the ``mode`` input step hands on: the cut's features (nvp) or the backbone's pixels; their names
        and dynamic dims."""
        if mode == "nvp":
            return (self.feats, input_names(mode, len(self.feats)),
                    [self.bb.dynamic_dims(self.layer, i, f.ndim) for i, f in enumerate(self.feats)])
        return self.pixels, input_names(mode, len(self.pixels)), [self.bb.dynamic_input_dims] * len(self.pixels)

    def input_specs(self, mode: str) -> list[TensorSpec]:
        """Specs of what the ``mode`` input step hands on (unbatched: the rows are frames)."""
        outs, names, dyn = self.tensors(mode)
        return [_tensor_spec(n, o, d, batched=False) for n, o, d in zip(names, outs, dyn)]

    def frame_size(self) -> list[TensorSpec]:
        """The video's (height, width), passed from the input step to the post step where the kind needs it."""
        return [_spec(FRAME_SIZE, "TYPE_INT64", [2])] if self.kind.frame_size else []


def _prepare(cfg: RepoConfig, store: VideoStore, name: str) -> _Export:
    task = get_task(name)
    bb = get_backbone(task.backbone)
    weights = cfg.weights.get(name, "default")
    random_init = weights == "random"
    model = bb.load_for(task, None if random_init else weights, random_init=random_init,
                        config=dict(cfg.backbone_config.get(name, {})))
    layer, chosen = serving_layer(store, name, cfg.layers.get(name))
    sm = bb.split(layer, model=model)
    # the check runs another batch size and another frame size: dims the exporter fixed by mistake fail it
    pixels, pixels_check = _example_inputs(bb, task, 2), _example_inputs(bb, task, 3, (40, 56))
    with torch.no_grad():
        feats, feats_check = sm.front(*pixels), sm.front(*pixels_check)
    ex = _Export(task, bb, model, weights, layer, chosen, sm, pixels, pixels_check, feats, feats_check)
    with torch.no_grad():
        ex.outputs = dict(zip(task.kind.model_outputs, _as_tuple(_Outputs(sm.tail, task.kind)(*feats))))
    return ex


def _add_onnx_models(repo: RepositoryBuilder, cfg: RepoConfig, ex: _Export, tmp: Path) -> dict[str, float]:
    """``<task>_tail`` (and ``<task>_backbone`` with the baselines), each checked against PyTorch; returns the
    parity numbers."""
    name, kind = ex.task.name, ex.kind
    ngc = cfg.target == "ngc"
    # batching: frames for image tasks, clips for video tasks (each clip already holds its frames)
    mbs = max(1, cfg.max_frames // ex.task.clip) if kind.video else cfg.max_frames
    onnx_kw = dict(max_batch_size=mbs, instances=cfg.instances, kind="KIND_GPU" if ngc else "KIND_CPU",
                   dynamic_batching=DynamicBatching(max_queue_delay_microseconds=cfg.queue_delay_us),
                   runtime="onnxruntime" if ngc else "python", tensorrt=ngc and cfg.tensorrt, queue=cfg.queue,
                   # local: run inside the Python backend, which checks them; ngc: dims and max_batch_size bound it
                   parameters={} if ngc else cfg.limit_parameters())
    out_specs = [_tensor_spec(o, t) for o, t in ex.outputs.items()]
    multi = len(ex.pixels) > 1  # SlowFast: the model takes its pathways as one list
    models = [("tail", _Outputs(ex.split.tail, kind), "nvp", ex.feats_check)]
    if cfg.baselines:
        models.append(("backbone", _Outputs(ex.model, kind, multi), "codec", ex.pixels_check))
    parity = {}
    for suffix, module, mode, check in models:
        args, names, dyn = ex.tensors(mode)
        path = tmp / f"{name}_{suffix}.onnx"
        parity[suffix] = export_onnx(module, args, names, kind.model_outputs, path, check, cfg.parity_tol, dyn)
        repo.add_onnx(f"{name}_{suffix}", path, [_tensor_spec(n, t, d) for n, t, d in zip(names, args, dyn)],
                      out_specs, **onnx_kw)
    return parity


def _add_post(repo: RepositoryBuilder, cfg: RepoConfig, ex: _Export, tmp: Path) -> tuple[list[TensorSpec],
                                                                                         int | None]:
    """``<task>_post``: the raw outputs (under their ensemble names) and the selected frames in, the kind's answer
    out; returns its output specs and the number of labelled classes (None: the answers carry no labels)."""
    name, kind = ex.task.name, ex.kind
    raw = {o: _tensor_spec(o, t, batched=False) for o, t in ex.outputs.items()}
    specs = {**{a.name: a for a in kind.answers}, **raw, FRAME_INDICES: _spec(FRAME_INDICES, "TYPE_INT64", [-1])}
    outs = [specs[o] for o in kind.post_outputs()]
    ins = [*(_spec(tail_name(o), r.dtype, r.shape) for o, r in raw.items()), _spec(SELECTED, "TYPE_INT64", [-1]),
           *ex.frame_size()]
    files = {}
    num_classes = kind.num_classes(ex.outputs)
    if num_classes is not None:
        labels = tmp / f"{name}_labels.json"
        labels.write_text(json.dumps(class_names(ex.task, num_classes)), encoding="utf-8")
        files["labels.json"] = labels
    on_device = kind.post_on_device and cfg.target == "ngc"
    repo.add(PythonModelSpec(name=f"{name}_post", source=_PYTHON_MODELS / "task_post" / "model.py",
                             inputs=tuple(ins), outputs=tuple(outs), files=files,
                             parameters={"task": name, **kind.post_parameters(cfg, ex.task),
                                         **cfg.limit_parameters()},
                             instances=cfg.instances, kind="KIND_GPU" if on_device else "KIND_CPU", queue=cfg.queue))
    return outs, num_classes


def input_model(mode: str) -> str:
    """The input model of a path (``nvp_input``, ...): one for every task, answering ``<task>.<tensor>``."""
    return f"{mode}_input"


@dataclass
class _Inputs:
    """What each path's shared input model serves, gathered task by task and added once all tasks are known:
    mode -> {task: its settings} and mode -> output specs (``<task>.<tensor>``)."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, list[TensorSpec]] = field(default_factory=dict)

    def add(self, ex: _Export, mode: str) -> dict[str, str]:
        """Register ``ex``'s task on the ``mode`` input model; returns its outputs (``<task>.<tensor>``) -> the
        names the task's ensemble reads them by."""
        name = ex.task.name
        self.tasks.setdefault(mode, {})[name] = ({"layer": ex.layer} if mode == "nvp"
                                                 else {"preprocess": ex.bb.preprocess_settings()})
        own = [*ex.input_specs(mode), _spec(FRAME_INDICES, "TYPE_INT64", [-1]), *ex.frame_size()]
        self.outputs.setdefault(mode, []).extend(_spec(task_output(name, o.name), o.dtype, o.shape) for o in own)
        return {task_output(name, o.name): SELECTED if o.name == FRAME_INDICES else o.name for o in own}

    def build(self, repo: RepositoryBuilder, cfg: RepoConfig) -> None:
        for mode, tasks in self.tasks.items():
            _add_input(repo, cfg, input_model(mode), {"mode": mode, "tasks": json.dumps(tasks)}, self.outputs[mode])


def _add_path(repo: RepositoryBuilder, ex: _Export, mode: str, post_outs: list[TensorSpec], inputs: _Inputs) -> str:
    """The ``mode`` ensemble (the shared input model -> tail or backbone -> post); returns its name."""
    name = ex.task.name
    names = ex.tensors(mode)[1]
    passed = {s.name: s.name for s in ex.frame_size()}
    model_outs = ex.kind.model_outputs
    ensemble = name if mode == "nvp" else f"{name}_{mode}"
    repo.add_ensemble(ensemble, [
        EnsembleStep(input_model(mode), {VIDEO_ID: VIDEO_ID, FRAME_SELECTION: FRAME_SELECTION}, inputs.add(ex, mode)),
        EnsembleStep(f"{name}_tail" if mode == "nvp" else f"{name}_backbone", {n: n for n in names},
                     {o: tail_name(o) for o in model_outs}),
        EnsembleStep(f"{name}_post", {**{tail_name(o): tail_name(o) for o in model_outs}, SELECTED: SELECTED,
                                      **passed}, {o.name: o.name for o in post_outs}),
    ], _request(), post_outs)
    return ensemble


def _add_input(repo: RepositoryBuilder, cfg: RepoConfig, model: str, params: dict[str, str],
               outputs: Sequence[TensorSpec]) -> None:
    """A path's input model (``python_models/task_input``, every task's): video ID + frame selection in,
    ``outputs`` out; ``params`` say which path and tasks."""
    params = {"store_root": str(cfg.store) if cfg.target == "ngc" else str(cfg.store.resolve()),
              "cache_size": str(cfg.cache_size), "max_frames": str(cfg.max_frames), **params,
              **cfg.limit_parameters()}
    repo.add_python(model, _PYTHON_MODELS / "task_input" / "model.py", _request(), outputs, parameters=params,
                    instances=cfg.instances, kind="KIND_GPU" if cfg.target == "ngc" else "KIND_CPU", queue=cfg.queue)


def _add_group(repo: RepositoryBuilder, cfg: RepoConfig, store: VideoStore, group: TaskGroup,
               tasks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The ensemble ``<group>``: ``nvp_input`` asked for every task of the group (the INR prefix once, each task's
    adapter) -> per task, in parallel, the task's own ``<task>_tail`` -> ``<task>_post`` (already added: their
    specs are read from the repository, not rebuilt), every answer under ``<task>.<output>``. Returns its summary,
    with the stored videos it answers and, for the others, why not (the error a request would get)."""
    models = repo.models
    layers = {t: str(tasks[t]["layer"]) for t in group.tasks}
    served = models[input_model("nvp")].outputs
    first: dict[str, str] = {}  # the group's tasks read the same frames: the frame indices (and size) of one
    steps, outs = [], []
    for t in group.tasks:
        tail, post = models[f"{t}_tail"], models[f"{t}_post"]
        own = {o.name.partition(".")[2]: o.name for o in served if o.name.partition(".")[0] == t}
        for name, ens in ((FRAME_INDICES, SELECTED), (FRAME_SIZE, FRAME_SIZE)):
            if name in own and ens not in first.values():
                first[own[name]] = ens
        cut = group_feature_names(t, [n for n in own if n not in (FRAME_INDICES, FRAME_SIZE)])
        first.update({v: v for v in cut.values()})
        raw = {tail_name(o.name): task_output(t, tail_name(o.name)) for o in tail.outputs}
        steps.append(EnsembleStep(tail.name, cut, {o.name: raw[tail_name(o.name)] for o in tail.outputs}))
        fed = {**raw, SELECTED: SELECTED, FRAME_SIZE: FRAME_SIZE}
        steps.append(EnsembleStep(post.name, {i.name: fed[i.name] for i in post.inputs},
                                  {o.name: task_output(t, o.name) for o in post.outputs}))
        outs += [_spec(task_output(t, o.name), o.dtype, o.shape) for o in post.outputs]
    start = EnsembleStep(input_model("nvp"), {VIDEO_ID: VIDEO_ID, FRAME_SELECTION: FRAME_SELECTION}, first)
    repo.add_ensemble(group.name, [start, *steps], _request(), outs)
    served, refused = {}, {}
    adapted = sorted({v for t in group.tasks for v in (*tasks[t]["videos"], *tasks[t]["other_layer"])})
    for video in adapted:
        try:
            pairings = {t: load_pairing(store, video, t) for t in group.tasks}
            metas = {t: {k: load_adapter(store, video, t, k)[1] for k in stored_exits(store.video(video), t)}
                     for t in group.tasks}
            served[video] = shared_exit(video, layers, pairings, metas)
        except KeyError:  # no pairing for one of the tasks
            refused[video] = "not adapted for " + ", ".join(t for t in group.tasks if video not in
                                                            (*tasks[t]["videos"], *tasks[t]["other_layer"]))
        except RequestError as e:
            refused[video] = str(e)
    return {"ensemble": group.name, "tasks": list(group.tasks), "layers": layers,
            "videos": served, "refused": refused}


@dataclass
class _CollectionSteps:
    """The three steps every ensemble of a D-NeRV collection starts with, built the same way for ``<ID>_decode``
    and ``<ID>_<task>``: ``lookup`` (Python: member + frames -> the clips' times, keyframes and distances, and each
    frame's place) -> ``prefix`` (ONNX, a clip per row: requests for different members stack) -> ``gather`` (the
    frames asked, in request order)."""

    cfg: RepoConfig
    collection: str
    decoder_sha256: str
    config: Any  # the shared D-NeRV's config

    @property
    def local(self) -> bool:
        return self.cfg.target == "local"

    @property
    def clip_specs(self) -> list[TensorSpec]:
        from .collection_prefix import CLIP_DIST, CLIP_KEYS, CLIP_T

        c = self.config
        return [_spec(CLIP_T, "TYPE_FP32", [-1, c.frames]),
                _spec(CLIP_KEYS, "TYPE_FP32", [-1, 3, 2, c.out_height, c.out_width]),
                _spec(CLIP_DIST, "TYPE_FP32", [-1, c.frames])]

    @property
    def place(self) -> list[TensorSpec]:
        from .collection_prefix import CLIP_POS, CLIP_ROW

        return [_spec(CLIP_ROW, "TYPE_INT64", [-1]), _spec(CLIP_POS, "TYPE_INT64", [-1])]

    def python_kw(self) -> dict[str, Any]:
        cfg = self.cfg
        return dict(instances=cfg.instances, kind="KIND_CPU" if self.local else "KIND_GPU", queue=cfg.queue)

    def onnx_kw(self) -> dict[str, Any]:
        """An ONNX model's settings: dynamic batching; run by onnxruntime in the Python backend (local, which
        checks the request limits) or by Triton's onnxruntime backend with TensorRT (ngc)."""
        cfg = self.cfg
        return dict(self.python_kw(), dynamic_batching=DynamicBatching(max_queue_delay_microseconds=cfg.queue_delay_us),
                    runtime="python" if self.local else "onnxruntime", tensorrt=not self.local and cfg.tensorrt,
                    parameters=cfg.limit_parameters() if self.local else {})

    def add(self, repo: RepositoryBuilder, stem: str, *, request: Sequence[TensorSpec],
            extra: Sequence[TensorSpec], params: Mapping[str, str], onnx: Path, prefix_out: Mapping[str, str],
            per_clip: Sequence[TensorSpec], gathered: Sequence[TensorSpec], gather: Mapping[str, str],
            rename: Mapping[str, str] | None = None) -> list[EnsembleStep]:
        """Add ``<stem>_lookup``, ``<stem>_prefix`` (``onnx``: its outputs ``prefix_out`` -> the ensemble's
        ``per_clip`` tensors) and ``<stem>_gather`` (``per_clip`` -> ``gathered``); returns their ensemble steps.
        ``request``: what the lookup reads; ``extra``: what it answers besides the clip inputs (frame indices ...),
        under the ensemble names ``rename`` gives (default: their own)."""
        from .collection_prefix import PREFIX_INPUTS

        cfg, rename = self.cfg, dict(rename or {})
        clip_specs, place = self.clip_specs, self.place
        base = {"store_root": str(cfg.store.resolve()) if self.local else str(cfg.store),
                "collection": self.collection, "decoder_sha256": self.decoder_sha256,
                "cache_size": str(cfg.cache_size), "max_frames": str(cfg.max_frames)}
        repo.add_python(f"{stem}_lookup", _PYTHON_MODELS / "collection_lookup" / "model.py", list(request),
                        [*clip_specs, *place, *extra], parameters={**base, **params, **cfg.limit_parameters()},
                        **self.python_kw())
        repo.add_onnx(f"{stem}_prefix", onnx,
                      [_spec(n, s.dtype, s.shape[1:]) for n, s in zip(PREFIX_INPUTS, clip_specs)],
                      [_spec(out, s.dtype, s.shape) for out, s in zip(prefix_out, per_clip)],
                      max_batch_size=cfg.max_frames, **self.onnx_kw())  # a clip per frame at most
        repo.add_python(f"{stem}_gather", _PYTHON_MODELS / "collection_gather" / "model.py",
                        [_spec(s.name, s.dtype, [-1, *s.shape]) for s in per_clip] + place, list(gathered),
                        parameters={**gather, **cfg.limit_parameters()}, **self.python_kw())
        return [
            EnsembleStep(f"{stem}_lookup", {r.name: r.name for r in request},
                         {s.name: rename.get(s.name, s.name) for s in (*clip_specs, *place, *extra)}),
            EnsembleStep(f"{stem}_prefix", {n: s.name for n, s in zip(PREFIX_INPUTS, clip_specs)}, dict(prefix_out)),
            EnsembleStep(f"{stem}_gather", {s.name: s.name for s in (*per_clip, *place)},
                         {s.name: s.name for s in gathered}),
        ]


def _add_collection(repo: RepositoryBuilder, cfg: RepoConfig, store: VideoStore, collection: str, tmp: Path,
                    exports: Mapping[str, _Export]) -> dict[str, Any]:
    """``<collection>_decode``: member ID + frame indices -> RGB frames, through the collection's shared D-NeRV
    exported once to ONNX (``collection_prefix``) between its lookup and gather steps (:class:`_CollectionSteps`;
    the ONNX model is ``<collection>_decode_prefix``). And for each built task the collection was adapted for,
    ``<collection>_<task>`` (:func:`_add_collection_task`)."""
    from ..entry import COLLECTION, INR_FILE
    from ..inr import decode_inr
    from .collection_prefix import CLIP_RGB, PREFIX_OUTPUT, export_prefix
    from .wire import FRAMES

    entry = store.video(collection)
    if entry.kind != COLLECTION:
        raise ValueError(f"'{collection}' is a {entry.kind}, not a collection: --collection names a collection ID "
                         "(python -m builder list)")
    model = decode_inr(store.get(collection, INR_FILE)).model
    c = model.config
    steps = _CollectionSteps(cfg, collection, entry.files[INR_FILE].sha256, c)
    path = tmp / f"{collection}_decoder.onnx"
    parity = export_prefix(model, None, path, cfg.parity_tol)
    T, H, W = c.frames, c.out_height, c.out_width
    request = [_spec(VIDEO_ID, "TYPE_STRING", [1]), _spec(FRAME_INDICES, "TYPE_INT64", [-1])]
    frames = _spec(FRAMES, "TYPE_FP32", [-1, 3, H, W])
    repo.add_ensemble(f"{collection}_decode", steps.add(
        repo, f"{collection}_decode", request=request, extra=[], params={}, onnx=path,
        prefix_out={PREFIX_OUTPUT: CLIP_RGB}, per_clip=[_spec(CLIP_RGB, "TYPE_FP32", [3, T, H, W])],
        gathered=[frames], gather={"gather": json.dumps({CLIP_RGB: FRAMES}), "time_axis": "2"}), request, [frames])
    served, refused = {}, {}
    for name, ex in exports.items():
        try:
            served[name] = _add_collection_task(repo, store, steps, model, ex, tmp)
        except _NotServed as e:
            refused[name] = str(e)
    return {"ensemble": f"{collection}_decode", "parity": parity, "clip_frames": T, "size": [W, H],
            "members": [m.id for m in store.members(collection)], "tasks": served, "refused": refused}


class _NotServed(Exception):
    """Why a collection gets no static ensemble for a task (reported in the build summary, not fatal)."""


def _add_collection_task(repo: RepositoryBuilder, store: VideoStore, steps: _CollectionSteps, model: Any,
                         ex: _Export, tmp: Path) -> dict[str, Any]:
    """``<collection>_<task>``: a member's task request answered through the shared decoder's prefix as an ONNX model
    (fixed weights, batched across members) and the collection's adapter (``adapt COLLECTION``), then the task's own
    tail and post models. A 2-D task's adapter runs inside the prefix graph, on each frame; a video task's 3-D
    adapter reads the request's frames as one clip, so it runs after the gather step, as an ONNX model of its own::

        <collection>_<task>_lookup (Python: selection -> clip inputs) -> <collection>_<task>_prefix (ONNX)
        -> <collection>_<task>_gather (the frames asked) [-> <collection>_<task>_adapter (ONNX, video tasks)]
        -> <task>_tail -> <task>_post

    Raises :class:`_NotServed` when the collection holds no adapter this repository's tail can take."""
    from ..entry import adapter_file
    from .collection_prefix import (PREFIX_OUTPUT, DNeRVPrefix, TaskPrefix, clip_name, example_inputs,
                                    export_clip_adapter, export_prefix, export_task_prefix)

    cfg, collection = steps.cfg, steps.collection
    name, entry, video = ex.task.name, store.video(collection), ex.task.video
    stored = {k: load_adapter(store, collection, name, k) for k in stored_exits(entry, name)}
    if not stored:
        raise _NotServed(f"not adapted: run 'python -m builder adapt {collection} --task {name}'")
    pairing = json.loads(store.get(collection, pairing_file(name)))
    try:
        k = choose_adapter(pairing, {k: meta for k, (_, meta) in stored.items()}, ex.layer, collection, name)
    except RequestError as e:
        raise _NotServed(str(e)) from None
    adapters = stored[k][0]
    stem = f"{collection}_{name}"
    tail_in = list(repo.models[f"{name}_tail"].inputs)  # what the task's tail takes (batched specs)
    names = [t.name for t in tail_in]
    path = tmp / f"{stem}_prefix.onnx"
    if video:  # the prefix alone; its [B, C, T, h, w] frames gathered into one clip for the 3-D adapter
        with torch.no_grad():  # the prefix's per-clip output shape at this collection's size
            feats = DNeRVPrefix(model, k)(*example_inputs(model, 1))
        parity = {"prefix": export_prefix(model, k, path, cfg.parity_tol)}
        per_clip = [_spec(clip_name("prefix"), "TYPE_FP32", feats.shape[1:])]
        prefix_out = {PREFIX_OUTPUT: clip_name("prefix")}  # the model's output -> the ensemble's tensor
        gathered = [_spec("prefix", "TYPE_FP32", [1, feats.shape[1], -1, *feats.shape[3:]])]
        gather = {"gather": json.dumps({clip_name("prefix"): "prefix"}), "time_axis": "2", "as_clip": "1"}
    else:  # prefix + adapter in one graph: each adapter output per clip, [B, T, ...]
        parity = {"prefix": export_task_prefix(model, k, adapters, [clip_name(n) for n in names], path,
                                               cfg.parity_tol)}
        with torch.no_grad():
            outs = TaskPrefix(model, k, adapters)(*example_inputs(model, 1))
        per_clip = [_tensor_spec(clip_name(n), o, dynamic=()) for n, o in zip(names, outs)]
        prefix_out = {clip_name(n): clip_name(n) for n in names}
        gathered = [_spec(t.name, t.dtype, [-1, *t.shape]) for t in tail_in]
        gather = {"gather": json.dumps({clip_name(n): n for n in names}), "time_axis": "1"}
    adapter = adapter_file(name, k)
    chain = steps.add(repo, stem, request=_request(), extra=[_spec(FRAME_INDICES, "TYPE_INT64", [-1]),
                                                             *ex.frame_size()],
                      params={"task": name, "adapter_file": adapter, "adapter_sha256": entry.files[adapter].sha256},
                      onnx=path, prefix_out=prefix_out, per_clip=per_clip, gathered=gathered, gather=gather,
                      rename={FRAME_INDICES: SELECTED})  # the post step reads the frame indices under this name
    if video:
        apath = tmp / f"{stem}_adapter.onnx"
        parity["adapter"] = export_clip_adapter(adapters, torch.rand(1, feats.shape[1], ex.task.clip,
                                                                     *feats.shape[3:]), names, apath, cfg.parity_tol)
        repo.add_onnx(f"{stem}_adapter", apath, [_spec("prefix", "TYPE_FP32", [feats.shape[1], -1, *feats.shape[3:]])],
                      tail_in, max_batch_size=repo.models[f"{name}_tail"].max_batch_size, **steps.onnx_kw())
        chain.append(EnsembleStep(f"{stem}_adapter", {"prefix": "prefix"}, {n: n for n in names}))
    model_outs = ex.kind.model_outputs
    post_outs = list(repo.models[f"{name}_post"].outputs)
    chain += [
        EnsembleStep(f"{name}_tail", {n: n for n in names}, {o: tail_name(o) for o in model_outs}),
        EnsembleStep(f"{name}_post", {**{tail_name(o): tail_name(o) for o in model_outs}, SELECTED: SELECTED,
                                      **{s.name: s.name for s in ex.frame_size()}},
                     {o.name: o.name for o in post_outs}),
    ]
    repo.add_ensemble(stem, chain, _request(), post_outs)
    return {"ensemble": stem, "exit_block": k, "layer": ex.layer, "parity": max(parity.values()),
            "adapter_params": adapters.num_params()}


def _add_task(repo: RepositoryBuilder, cfg: RepoConfig, store: VideoStore, name: str, tmp: Path, inputs: _Inputs
              ) -> tuple[dict[str, Any], _Export]:
    """Export one task's ONNX models and add its post and ensemble models (its inputs: registered on ``inputs``);
    returns its summary and export."""
    ex = _prepare(cfg, store, name)
    parity = _add_onnx_models(repo, cfg, ex, tmp)
    post_outs, num_classes = _add_post(repo, cfg, ex, tmp)
    ensembles = [_add_path(repo, ex, mode, post_outs, inputs) for mode in (PATHS if cfg.baselines else ("nvp",))]
    return {
        "kind": ex.kind.name, "layer": ex.layer, "num_classes": num_classes, "parity": parity,
        "preprocess": ex.bb.preprocess_settings(), "weights": ex.weights,
        "outputs": {o: list(t.shape[1:]) for o, t in ex.outputs.items()},
        "videos": sorted(v for v, l in ex.chosen.items() if l == ex.layer),
        "other_layer": sorted(v for v, l in ex.chosen.items() if l != ex.layer),
        "ensembles": ensembles,
    }, ex
