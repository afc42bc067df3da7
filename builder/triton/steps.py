"""Our Python-backend models, built one way for the Triton stub and for the in-process chain.

Each ``python_models/<kind>/model.py`` is a shell of a few lines that names its kind (``KIND = "decode"``) and
calls :func:`served_step`; :class:`~builder.triton.chain.StepChain` (``bench_served.py``'s in-process reference, and
the fused model) builds the same steps with :func:`open_step`. So a step runs the same handler, with the same
:class:`~builder.triton.serving.RequestLimits`, wherever it runs::

    step = open_step("task_input", config, model_dir / "1")
    answer = step.handle({"video_id": ..., "frame_selection": ...})
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .serving import RequestLimits, model_parameters, respond, set_instance_threads

__all__ = ["KINDS", "Step", "open_step", "served_step", "step_kind"]

KINDS = ("collection_gather", "collection_lookup", "decode", "fused", "onnx_runtime", "task_input", "task_post")
_KIND_LINE = re.compile(r'^KIND = "(\w+)"', re.MULTILINE)


@dataclass(frozen=True)
class Step:
    """One built step: ``handle(inputs) -> outputs`` (numpy by name), the inputs it reads and its limits."""

    name: str
    handle: Callable[..., dict[str, np.ndarray]]
    inputs: tuple[str, ...]
    limits: RequestLimits
    close: Callable[[], None] = lambda: None
    threads: int | None = None  # torch threads for the stub process (None: leave them)
    requested: bool = False  # handle(inputs, requested output names): an input model computes only those tasks
    about: str = ""  # the server log's line about it

    def respond(self, pb_utils: Any, requests: list) -> list:
        """Triton's ``execute``: every request answered, or refused on its own (:func:`serving.respond`)."""
        return respond(pb_utils, requests, self.inputs, self.handle, self.name, pb_utils.Logger.log_warn,
                       limits=self.limits, requested=self.requested)


def step_kind(model_dir: Path) -> str | None:
    """Which of our Python models a model directory holds (its ``model.py``'s ``KIND`` line), or None."""
    source = model_dir / "1" / "model.py"
    if not source.is_file():
        return None
    found = _KIND_LINE.search(source.read_text(encoding="utf-8", errors="replace"))
    return found.group(1) if found and found.group(1) in KINDS else None


def open_step(kind: str, config: Mapping[str, Any], version_dir: Path, *, name: str | None = None,
              instance_kind: str = "CPU", device_id: str | int = 0, requested: frozenset[str] | None = None,
              log: Callable[[str], None] | None = None) -> Step:
    """The step of kind ``kind`` from its model config (the JSON Triton hands ``initialize``) and its version
    directory. ``requested``: the outputs an ensemble reads from it (in a chain: an input model computes only
    those tasks'; served, Triton passes them per request)."""
    from .serving import OnnxRunner
    from .task_serving import input_handler, post_handler

    name = name or str(config.get("name", kind))
    limits = RequestLimits.from_model_config(config)
    params = model_parameters(config)
    declared = tuple(t["name"] for t in config.get("input", []))
    where = dict(instance_kind=instance_kind, device_id=device_id)
    if kind == "onnx_runtime":
        runner = OnnxRunner.from_model_config(config, version_dir, **where)
        return Step(name, runner.handle, tuple(runner.inputs), limits)
    if kind == "task_input":
        handler = input_handler(params, log=log, **where)
        o = handler.settings.options
        handle = handler.handle if requested is None else partial(handler.handle, requested=requested)
        return Step(name, handle, declared, limits, handler.close, o.num_threads, requested is None,
                    f"{handler.describe()} over store {handler.settings.store_root} on {o.device}")
    if kind == "decode":
        from .decode import DecodeHandler, DecodeSettings

        settings = DecodeSettings.from_parameters(params, **where)
        decoder = DecodeHandler(settings, log=log)
        return Step(name, decoder.handle, declared, limits, decoder.close, settings.num_threads,
                    about=f"serving store {settings.store_root} on {settings.device} (cache {settings.cache_size} "
                          f"INRs, max {settings.max_frames} frames per request)")
    if kind in ("collection_lookup", "collection_gather"):
        from .collection_prefix import GatherHandler, LookupHandler

        if kind == "collection_lookup":  # keyframe decoding and indexing: one thread leaves the cores to the decoder
            lookup = LookupHandler(params)
            return Step(name, lookup.handle, lookup.inputs, limits, threads=1)
        gather = GatherHandler.from_parameters(params)
        return Step(name, gather.handle, gather.inputs, limits)
    if kind == "task_post":
        post = post_handler(params, version_dir, **where)
        return Step(name, post.handle, tuple(post.inputs), limits)
    if kind == "fused":
        from .chain import StepChain

        chain = StepChain.from_repository(version_dir / "steps", name, **where)
        return Step(name, chain.handle, chain.inputs, limits, chain.close,
                    about=f"steps {', '.join(s.name for s in chain.steps)} in one process")
    raise ValueError(f"model '{name}': no step of kind {kind!r} (ours: {', '.join(KINDS)})")


def served_step(kind: str, args: Mapping[str, Any], logger: Any) -> Step:
    """A shell's ``initialize(args)``: the step built by :func:`open_step` from what Triton hands it, torch's
    threads set once for this stub process, and a line in the server log."""
    step = open_step(kind, json.loads(args["model_config"]), Path(args["model_repository"]) / args["model_version"],
                     name=args["model_name"], instance_kind=args.get("model_instance_kind", "CPU"),
                     device_id=args.get("model_instance_device_id", "0"), log=logger.log_verbose)
    if step.threads is not None:
        set_instance_threads(step.threads)  # once per instance: each runs in its own stub process
    if step.about:
        logger.log_info(f"{step.name}: {step.about}")
    return step
