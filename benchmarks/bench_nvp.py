"""NVP path vs decoding, EfficientNet-Lite0 with its real ImageNet weights, on real clips (docs/BENCHMARKS.md).

  python benchmarks/bench_nvp.py --clips bikes carphone bigbuckbunny --out bench_out/nvp

Per clip: encode 32 frames with HNeRV (fixed epochs), run `adapt` (every exit block x every curated layer, CKA
top-10) with each adapter recipe (the seed's; least-squares init; LS + KL task loss), then per exit block the top-1
agreement with the raw frames' predictions on the 8 protocol frames, GFLOPs per frame, and wall-clock ms per frame (batch 8,
median of repeats, same process) of three paths:
  codec      = decode the H.264 source file with PyAV (the 32-frame span) + resize + full backbone
  fulldecode = full INR decode + resize + full backbone
  nvp        = INR prefix up to the exit block + adapter + backbone tail
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from builder.api import encode_video, load_inr  # noqa: E402
from builder.backbones import get_backbone  # noqa: E402
from builder.config import AdapterTrainConfig, TrainConfig  # noqa: E402
from builder.nvp import NVPPath, adapt_video, load_adapter  # noqa: E402
from builder.protocols import classification_scores, uniform_frames  # noqa: E402
from builder.samples import sample_path  # noqa: E402
from builder.store import VideoStore  # noqa: E402
from builder.video import read_video  # noqa: E402

# adapter recipes: the seed's (default init, lr 1e-4), least-squares init, and LS + KL task loss through the tail
RECIPES = {
    "default": AdapterTrainConfig(epochs=30),
    "ls": AdapterTrainConfig(init="ls", epochs=30),
    "ls+task": AdapterTrainConfig(init="ls", epochs=30, lr=1e-3, task_loss=1.0),
}
# (frames step, size) per clip: 32 frames, aspect kept, CPU-sized
CLIPS = {"bikes": (2, (320, 136)), "carphone": (3, (176, 144)), "bigbuckbunny": (4, (320, 180))}


def median_ms(fn, frames: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / frames


def run_clip(name: str, args, store: VideoStore, bb, model) -> list[dict]:
    step, size = CLIPS[name]
    vid = f"bench-{name}"
    if not store.exists(vid):
        encode_video(sample_path(name), vid, store=store, arch="hnerv", count=32, step=step, size=size,
                     model={"stem_dim": 48, "enc_dim": 32}, progress=True,
                     train=TrainConfig(recipe="hnerv", epochs=args.epochs, lr=2e-3))
    meta = store.meta(vid)
    inr = load_inr(store, vid).model
    src = sample_path(name)
    frames = read_video(src, count=32, step=step, size=size).frames
    idx = uniform_frames(32, 8)
    with torch.no_grad():
        raw = model(bb.preprocess(frames[idx]))
        full_logits = model(bb.preprocess(inr(torch.tensor(idx))))
    # wall clock of the two baselines (8 frames, batch 8). The codec path decodes the clip's span from the source
    # file (H.264 needs every frame up to the last one), converts/resizes its 32 kept frames, classifies 8.
    def codec():
        return model(bb.preprocess(read_video(src, count=32, step=step, size=size).frames[idx]))

    def fulldecode():
        return model(bb.preprocess(inr(torch.tensor(idx))))

    with torch.no_grad():
        ms_codec = median_ms(codec, 8, args.repeats)
        ms_full = median_ms(fulldecode, 8, args.repeats)
    probs = raw.softmax(1)
    stability = {"mean_top1_prob": probs.max(1).values.mean().item(),
                 "frames_agreeing_with_video_top1": (raw.argmax(1) == raw.mean(0).argmax()).float().mean().item()}
    rows = []
    for init in args.recipes:
        res = adapt_video(store, vid, "effnet_lite0", backbone=bb, top_k=args.top_k, min_agreement=0.9,
                          train=RECIPES[init], progress=True)
        for k in range(1, inr.num_blocks + 1):
            try:
                adapters, ameta = load_adapter(store, vid, "effnet_lite0", k)
            except KeyError:
                continue
            path = NVPPath(inr, k, adapters, bb.split(ameta["layer"], model=model).tail, video=False)
            with torch.no_grad():
                scores = classification_scores(path(idx), raw)
                ms_nvp = median_ms(lambda: path(idx), 8, args.repeats)
            measured = [m for m in res["measured"] if m["exit_block"] == k and m["layer"] == ameta["layer"]][0]
            rows.append({"clip": name, "init": init, "exit_block": k, "layer": ameta["layer"], **scores,
                         "gflops_nvp": measured["gflops"], "ms_nvp": ms_nvp, "ms_codec": ms_codec,
                         "ms_fulldecode": ms_full, "rel_mse": measured["rel_mse"],
                         "adapter_params": measured["adapter_params"], "psnr": meta["psnr"], "bpp": meta["bpp"],
                         "fulldecode_accuracy": classification_scores(full_logits, raw)["accuracy"], **stability})
        print(f"{name} {init}: chosen exit {res['exit_block']} -> {res['layer']} acc {res['accuracy']:.3f}",
              file=sys.stderr)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    p.add_argument("--epochs", type=int, default=60, help="HNeRV training epochs per clip")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench_out/nvp"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    store = VideoStore(args.out / "store")
    bb = get_backbone("effnet_lite0")
    model = bb.load()
    from builder.protocols import gflops_of

    g_backbone = gflops_of(model, bb.preprocess(torch.rand(1, 3, 136, 320)))
    rows = []
    for name in args.clips:
        rows += run_clip(name, args, store, bb, model)
    lines = ["| clip | recipe | exit | layer | top-1 agr. | video agr. | top-5 overlap | KL | NVP GFLOPs | NVP ms | "
             "codec ms | full-decode ms | codec/NVP | full/NVP |", "|" + "---|" * 14]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['init']} | {r['exit_block']} | {r['layer']} | {r['accuracy']:.3f} | "
                     f"{r['video_accuracy']:.0f} | {r['top5']:.2f} | {r['kl']:.2f} | {r['gflops_nvp']:.3f} | "
                     f"{r['ms_nvp']:.1f} | {r['ms_codec']:.1f} | {r['ms_fulldecode']:.1f} | "
                     f"{r['ms_codec'] / r['ms_nvp']:.2f} | {r['ms_fulldecode'] / r['ms_nvp']:.2f} |")
    clips = sorted({r["clip"] for r in rows})
    lines += ["", "| clip | INR PSNR | bpp | raw mean top-1 prob | raw frames agreeing with video top-1 | "
              "full-decode top-1 agr. |", "|---|---|---|---|---|---|"]
    for c in clips:
        r = [x for x in rows if x["clip"] == c][0]
        lines.append(f"| {c} | {r['psnr']:.2f} | {r['bpp']:.3f} | {r['mean_top1_prob']:.2f} | "
                     f"{r['frames_agreeing_with_video_top1']:.2f} | {r['fulldecode_accuracy']:.3f} |")
    (args.out / "nvp.md").write_text("\n".join(lines) + "\n")
    (args.out / "nvp.json").write_text(json.dumps({"machine": f"{platform.machine()}, {torch.get_num_threads()} "
                                                              f"threads", "argv": sys.argv,
                                                   "backbone_gflops": g_backbone, "rows": rows}, indent=1))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for c in clips:
        for init, m in zip(args.recipes, ("o--", "s-", "^-")):
            sel = [r for r in rows if r["clip"] == c and r["init"] == init]
            ax.plot([r["ms_nvp"] for r in sel], [r["accuracy"] for r in sel], m, label=f"{c} NVP ({init})")
        r0 = [r for r in rows if r["clip"] == c][0]
        ax.axvline(r0["ms_codec"], ls=":", lw=1, color="gray")
    ax.set_xlabel("ms per frame (batch 8; dotted: codec path per clip)")
    ax.set_ylabel("top-1 agreement with raw frames")
    ax.set_title("EfficientNet-Lite0: NVP exits 1..n vs the codec path")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.out / "nvp_agreement_vs_ms.png", dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
