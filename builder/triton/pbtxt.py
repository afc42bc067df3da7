"""Spec -> ``ModelConfig`` protobuf -> ``config.pbtxt`` text, and back.

Configs go through tritonclient's own ``model_config_pb2.ModelConfig`` (the server's schema), so a field name or
enum typo fails here instead of at server start, and the text is printed by ``google.protobuf.text_format``, never
assembled with ``str.format``.
"""
from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ..tensor_spec import TensorSpec
from .specs import EnsembleSpec, ModelSpec, OnnxModelSpec, PythonModelSpec

__all__ = [
    "io_specs",
    "parse_pbtxt",
    "read_config",
    "to_model_config",
    "to_pbtxt",
]

ModelConfig = mc.ModelConfig


def _tensor(msg, t: TensorSpec) -> None:
    msg.name = t.name
    msg.data_type = mc.DataType.Value(t.triton_dtype)
    msg.dims.extend(t.shape)


def _common(cfg: mc.ModelConfig, spec: ModelSpec) -> None:
    cfg.max_batch_size = spec.max_batch_size
    for t in spec.inputs:
        _tensor(cfg.input.add(), t)
    for t in spec.outputs:
        _tensor(cfg.output.add(), t)
    group = cfg.instance_group.add()
    group.kind = mc.ModelInstanceGroup.Kind.Value(spec.kind)
    group.count = spec.instances
    group.gpus.extend(spec.gpus)
    if spec.dynamic_batching is not None:
        cfg.dynamic_batching.preferred_batch_size.extend(spec.dynamic_batching.preferred_batch_sizes)
        cfg.dynamic_batching.max_queue_delay_microseconds = spec.dynamic_batching.max_queue_delay_microseconds
        cfg.dynamic_batching.SetInParent()  # present even with every field at its default
    if spec.queue is not None:
        policy = cfg.dynamic_batching.default_queue_policy
        policy.max_queue_size = spec.queue.max_queue_size
        policy.default_timeout_microseconds = spec.queue.timeout_microseconds
        policy.timeout_action = mc.ModelQueuePolicy.TimeoutAction.Value("REJECT")
    for key, value in sorted(spec.parameters.items()):
        cfg.parameters[key].string_value = value


def to_model_config(spec: ModelSpec | EnsembleSpec) -> mc.ModelConfig:
    """The ``ModelConfig`` protobuf of ``spec``."""
    cfg = mc.ModelConfig(name=spec.name)
    if isinstance(spec, EnsembleSpec):
        cfg.platform = "ensemble"
        cfg.max_batch_size = spec.max_batch_size
        for t in spec.inputs:
            _tensor(cfg.input.add(), t)
        for t in spec.outputs:
            _tensor(cfg.output.add(), t)
        for step in spec.steps:
            s = cfg.ensemble_scheduling.step.add()
            s.model_name = step.model
            s.model_version = step.model_version
            for k, v in step.input_map.items():
                s.input_map[k] = v
            for k, v in step.output_map.items():
                s.output_map[k] = v
        return cfg
    if isinstance(spec, PythonModelSpec):
        cfg.backend = "python"
    elif isinstance(spec, OnnxModelSpec):
        cfg.platform = "onnxruntime_onnx"
        cfg.default_model_filename = "model.onnx"
        if spec.tensorrt is not None:
            acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add()
            acc.name = "tensorrt"
            for k, v in spec.tensorrt.parameters().items():
                acc.parameters[k] = v
    else:
        raise TypeError(f"no Triton config for {type(spec).__name__}")
    _common(cfg, spec)
    return cfg


def to_pbtxt(spec_or_config: ModelSpec | EnsembleSpec | mc.ModelConfig) -> str:
    """``config.pbtxt`` text for a spec (or an already built ``ModelConfig``)."""
    cfg = spec_or_config if isinstance(spec_or_config, mc.ModelConfig) else to_model_config(spec_or_config)
    return text_format.MessageToString(cfg)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text; raises ``google.protobuf.text_format.ParseError`` on unknown fields."""
    return text_format.Parse(text, mc.ModelConfig())


def read_config(path: str | Path) -> mc.ModelConfig:
    """Parse ``<model>/config.pbtxt`` (or a model directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.pbtxt"
    return parse_pbtxt(p.read_text(encoding="utf-8"))


def io_specs(cfg: mc.ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of a parsed config as :class:`TensorSpec` lists."""
    def conv(ts) -> list[TensorSpec]:
        return [TensorSpec(t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in ts]

    return conv(cfg.input), conv(cfg.output)
