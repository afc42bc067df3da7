"""Triton serving: typed model specs, config.pbtxt generation, the repository builder, the served Python models
and a runner for the real ``tritonserver``.

Modules: ``specs`` (typed models), ``pbtxt`` (config.pbtxt), ``repository`` (RepositoryBuilder), ``wire`` (names
clients and served models share), ``serving`` (request plumbing shared by the served models), ``decode`` and
``task_serving`` (the served models' request handling), ``pipelines`` (the served repository), ``install``
(locating and preparing tritonserver), ``server`` (running it).

Public API (imported lazily, so importing ``builder.triton`` pulls in neither tritonclient nor torch)::

    TensorSpec, PythonModelSpec, OnnxModelSpec, EnsembleStep, EnsembleSpec, DynamicBatching, TensorRTOptions
    to_model_config, to_pbtxt, parse_pbtxt, read_config
    RepositoryBuilder, RepositoryError, build_decode_repository
    TritonServer, TritonServerError, serve, locate_tritonserver, locate_perf_analyzer
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TensorSpec": "specs", "PythonModelSpec": "specs", "OnnxModelSpec": "specs", "EnsembleStep": "specs",
    "EnsembleSpec": "specs", "DynamicBatching": "specs", "TensorRTOptions": "specs",
    "to_model_config": "pbtxt", "to_pbtxt": "pbtxt", "parse_pbtxt": "pbtxt", "read_config": "pbtxt",
    "RepositoryBuilder": "repository", "RepositoryError": "repository", "PYTHON_MODELS": "repository",
    "build_decode_repository": "decode",
    "TritonServer": "server", "serve": "server",
    "TritonServerError": "install", "locate_tritonserver": "install", "locate_perf_analyzer": "install",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'builder.triton' has no attribute {name!r}")
