"""The rate term (`encode --rate-weight L`) at equal model size and equal epochs: stored bpp and PSNR per weight.

  PYTHONPATH=. python benchmarks/bench_rate_term.py                       # bikes, 16 frames at 160x96, --bpp 1.0
  PYTHONPATH=. python benchmarks/bench_rate_term.py --bpp 1.0 2.0 --weights 0 0.001 0.01 --epochs 60

Every row is `encode_video` as `python -m builder encode bikes.mp4 --arch hnerv --frames 16 --step 4 --size
160x96 --bpp B --epochs E --rate-weight L --chunk-frames 0` runs it: the same model (sized for B before training),
the same epochs (immune to a loaded CPU), so the rate term's effect is the bytes it saves against the dB it costs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from builder.api import encode_video
from builder.samples import sample_path
from builder.store import VideoStore
from training.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bpp", nargs="+", type=float, default=[1.0], help="rate targets (default 1.0)")
    p.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.01, 0.1], help="--rate-weight values")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("bench_out/rate_term"))
    a = p.parse_args(argv)
    store = VideoStore(a.out / "store")
    for bpp in a.bpp:
        for weight in a.weights:
            t0 = time.perf_counter()
            m = encode_video(sample_path("bikes"), f"rt-{bpp:g}-{weight:g}".replace(".", "p"), store=store,
                             arch="hnerv", count=16, step=4, size=(160, 96), bpp=bpp, chunk_frames=0,
                             train=TrainConfig(recipe="hnerv", epochs=a.epochs, rate_weight=weight),
                             overwrite=True, progress=False)
            print(json.dumps({"rate_weight": weight, "target_bpp": bpp, "bpp": m["bpp"], "psnr": m["psnr"],
                              "params": m["params"], "epochs": m["epochs"], "train_s": m["train_seconds"],
                              "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
