"""What ``serve``'s request guard costs and buys (docs/BENCHMARKS.md, "The request guard"):

  PYTHONPATH=. python benchmarks/bench_guard.py --out bench_out/guard

1. encodes 32 frames of carphone (176x144, HNeRV, ``--epochs``) and adapts EfficientNet-Lite0 (real weights) at
   exit 2 -> ``blocks.5``; builds the repository (``build-repo --tasks effnet_lite0 --no-baselines``);
2. starts ONE tritonserver and a :class:`~builder.triton.guard.RequestGuard` in front of it (4 MB, ``serve``'s
   default), then per round and concurrency runs perf_analyzer on the NVP ensemble straight at tritonserver and
   through the guard, back to back, order alternating (the ratio is taken within each round);
3. sends one 200 MB ``decode`` request each way and records the time to the refusal and tritonserver's RSS before
   and after.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from builder.api import encode_video
from builder.nvp.search import adapt_video
from builder.nvp.storage import pairing_file
from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.guard import DEFAULT_MAX_BODY_MB, RequestGuard
from builder.triton.wire import FRAME_SELECTION, VIDEO_ID
from training.config import AdapterTrainConfig, TrainConfig

TASK, VIDEO = "effnet_lite0", "guard-carphone"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _huge(url: str) -> dict:
    """One 200 MB decode request: seconds to the answer (an error) and the error's first words."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    vid = grpcclient.InferInput(VIDEO_ID, [1], "BYTES")
    vid.set_data_from_numpy(np.array([VIDEO.encode()], dtype=object))
    idx = grpcclient.InferInput("frame_indices", [25_000_000], "INT64")
    idx.set_data_from_numpy(np.zeros(25_000_000, np.int64))
    t0 = time.perf_counter()
    try:
        client.infer("decode", [vid, idx], client_timeout=120)
        error = "answered"
    except InferenceServerException as e:
        error = " ".join(str(e.message()).split()[:12])
    took = time.perf_counter() - t0
    client.close()
    return {"seconds": round(took, 3), "error": error}


def main() -> int:
    from clients.perf import run_perf

    from builder.triton.server import TritonServer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/guard"))
    p.add_argument("--epochs", type=int, default=10, help="HNeRV epochs (throughput does not depend on them)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer window; each level is 3 of them")
    args = p.parse_args()
    store = VideoStore(args.out / "store")
    if not store.exists(VIDEO):
        encode_video(sample_path("carphone"), VIDEO, store=store, arch="hnerv", count=32, step=3,
                     train=TrainConfig(epochs=args.epochs), progress=False)
    if pairing_file(TASK) not in store.entry(VIDEO)["files"]:
        adapt_video(store, VIDEO, TASK, exits=[2], layers=["blocks.5"], top_k=1,
                    train=AdapterTrainConfig(init="ls", epochs=10), progress=False)
    repo = args.out / "model_repository"
    subprocess.run([sys.executable, "-m", "builder", "build-repo", "--store", str(store.root), "--out", str(repo),
                    "--tasks", TASK, "--no-baselines", "--no-progress"], check=True)
    runs: dict[int, list[dict[str, dict]]] = {c: [] for c in sorted(set(args.concurrency))}
    with tempfile.TemporaryDirectory() as tmp, TritonServer(repo, restricted=(), startup_timeout=600,
                                                            metrics_port=None) as server, \
            RequestGuard(server.grpc_url, server.http_url, max_bytes=DEFAULT_MAX_BODY_MB * 2**20) as guard:
        data = Path(tmp) / "data.json"
        data.write_text(json.dumps({"data": [{VIDEO_ID: [VIDEO], FRAME_SELECTION: ["auto"]}]}))
        urls = {"direct": server.grpc_url, "guard": guard.grpc_url}
        for i in range(args.rounds):
            for c, rounds in runs.items():
                rounds.append({})
                for way in list(urls)[::1 if i % 2 == 0 else -1]:
                    rounds[-1][way] = run_perf(urls[way], TASK, data, Path(tmp) / f"{way}.csv", [c],
                                               args.window_ms)[0]
                print(f"round {i + 1} c{c}: " + ", ".join(f"{w} {r['infer_per_s']:.2f}/s"
                                                          for w, r in rounds[-1].items()), file=sys.stderr)
        huge = {}
        for way in ("guard", "direct"):  # the guard first: the direct request leaves memory behind
            before = _rss_mb(server.pid)
            huge[way] = {**_huge(urls[way]), "rss_before_mb": round(before)}
            time.sleep(1)
            huge[way]["rss_after_mb"] = round(_rss_mb(server.pid))
    lines = ["| concurrency | straight at tritonserver: req/s | p50 ms | through the guard: req/s | p50 ms | "
             "guard / direct (per round) |", "|---:|---:|---:|---:|---:|---|"]
    rows = []
    for c, rounds in runs.items():
        ratios = [r["guard"]["infer_per_s"] / r["direct"]["infer_per_s"] for r in rounds]
        med = {w: {k: statistics.median(r[w][k] for r in rounds) for k in ("infer_per_s", "p50_ms")}
               for w in ("direct", "guard")}
        rows.append({"concurrency": c, **med, "ratio": statistics.median(ratios), "ratios": ratios})
        lines.append(f"| {c} | {med['direct']['infer_per_s']:.2f} | {med['direct']['p50_ms']:.1f} | "
                     f"{med['guard']['infer_per_s']:.2f} | {med['guard']['p50_ms']:.1f} | median "
                     f"{rows[-1]['ratio']:.2f}x ({', '.join(f'{x:.2f}' for x in ratios)}) |")
    lines += ["", "| 200 MB decode request | refused after s | error | tritonserver RSS MB before → after |",
              "|---|---:|---|---|"]
    for way, h in huge.items():
        lines.append(f"| {way} | {h['seconds']} | {h['error']} | {h['rss_before_mb']} → {h['rss_after_mb']} |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "guard.md").write_text(table + "\n")
    print(table)
    print(json.dumps({"machine": f"{platform.machine()}", "rows": rows, "huge": huge}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
