"""Triton serving: typed model specs, config.pbtxt generation, the repository builder, the served Python models
and a runner for the real ``tritonserver``.

Public API (imported lazily, so importing ``builder.triton`` pulls in neither tritonclient nor torch)::

    TensorSpec, PythonModelSpec, OnnxModelSpec, EnsembleStep, EnsembleSpec, DynamicBatching, TensorRTOptions
    to_model_config, to_pbtxt, parse_pbtxt, read_config
    RepositoryBuilder, RepositoryError, build_decode_repository
    TritonServer, TritonServerError, serve, add_serve_arguments, run_serve, add_build_repo_arguments, run_build_repo
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TensorSpec": "specs", "PythonModelSpec": "specs", "OnnxModelSpec": "specs", "EnsembleStep": "specs",
    "EnsembleSpec": "specs", "DynamicBatching": "specs", "TensorRTOptions": "specs",
    "to_model_config": "pbtxt", "to_pbtxt": "pbtxt", "parse_pbtxt": "pbtxt", "read_config": "pbtxt",
    "RepositoryBuilder": "repository", "RepositoryError": "repository",
    "build_decode_repository": "repository", "PYTHON_MODELS": "repository",
    "TritonServer": "server", "TritonServerError": "server", "serve": "server", "add_serve_arguments": "server",
    "run_serve": "server", "add_build_repo_arguments": "server", "run_build_repo": "server",
    "locate_tritonserver": "server", "locate_perf_analyzer": "server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'builder.triton' has no attribute {name!r}")
