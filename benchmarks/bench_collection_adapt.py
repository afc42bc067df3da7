"""One adapter for a D-NeRV collection, scored on the videos it never trained on (``adapt COLLECTION``).

  PYTHONPATH=benchmarks:. python benchmarks/bench_collection_adapt.py            # 6 real videos, both classifiers

The collection: one 16-frame clip (every 2nd frame) from each real video that ships in packages here
(``scenes.SCENES6``: bikes, carphone, Big Buck Bunny, gradio's a, b and world), centre-cropped and resized to
--size, each written as its own file and encoded together by ``encode-collection`` (the default D-NeRV size for
the rate target, a fixed --epochs so that the result does not depend on the machine's load). ``adapt`` on the
collection then trains one adapter per exit block on a quarter of the frames of videos 1, 3 and 5 and chooses the
pair on videos 2, 4 and 6, where it reports the agreement, the codec path's (each member's H.264 twin at its
bytes) and the constant answer's (the training frames' majority answer).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from pathlib import Path

from scenes import SCENES6, make_scene_clip

from builder.cli import main as cli
from builder.nvp.shared import adapt_collection
from builder.store import VideoStore
from builder.video import parse_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="160x96", help="WxH of every clip (default 160x96)")
    ap.add_argument("--epochs", type=int, default=150, help="D-NeRV training epochs (default 150)")
    ap.add_argument("--tasks", nargs="+", default=["effnet_lite0", "mobilenet_v2"])
    ap.add_argument("--out", type=Path, default=Path("bench_out/collection_adapt"))
    args = ap.parse_args()
    w, h = parse_size(args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    store = VideoStore(args.out / "store")
    files = []
    for s in SCENES6:
        f = args.out / f"{s.sample}.mp4"
        if not f.exists():
            make_scene_clip((s,), f, size=(w, h))
        files.append(str(f))
    t0 = time.perf_counter()
    if "col6" not in {e["id"] for e in store.list()}:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = cli(["encode-collection", *files, "--id", "col6", "--store", str(store.root), "--epochs",
                      str(args.epochs), "--names", *[s.sample.replace("_", "-") for s in SCENES6], "--json"])
        assert rc == 0, out.getvalue()[-2000:]
        print(out.getvalue().strip().splitlines()[-2] if out.getvalue() else "")
    members = {m.id: m for m in store.members("col6")}
    print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}); collection in "
          f"{time.perf_counter() - t0:.0f} s")
    print("| member | PSNR dB | bpp | H.264 twin dB |")
    print("|---|---|---|---|")
    for vid, m in members.items():
        print(f"| {vid} | {m.quality.psnr:.2f} | {m.quality.bpp:.3f} | {m.h264.psnr if m.h264 else float('nan'):.2f} |")
    rows = []
    for task in args.tasks:
        r = adapt_collection(store, "col6", task, progress=False)
        rows.append(r)
        (args.out / f"{task}.json").write_text(json.dumps(r, indent=1, default=str))
    print("\n| task | trained on | held out | constant | codec | NVP | NVP (video) | pair | NVP / codec ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        codec = r["codec"] or {}
        print(f"| {r['task']} | {', '.join(r['train_videos'])} | {', '.join(r['heldout_videos'])} | "
              f"{r['constant_baseline'].get('accuracy', float('nan')):.2f} | {codec.get('accuracy', float('nan')):.2f} | "
              f"**{r['accuracy']:.2f}** | {r['video_accuracy']:.2f} | e{r['exit_block']} -> {r['layer']} "
              f"({r['adapter_kind']}) | {r['ms_per_frame'] / codec['ms_per_frame'] if codec else float('nan'):.2f} |")
        print("  per held-out video: " + ", ".join(f"{v} {s['accuracy']:.2f}" for v, s in r["per_video"].items()))


if __name__ == "__main__":
    main()
