"""One multi-task request against the same tasks as separate requests (docs/BENCHMARKS.md, "Multi-task requests"):

  python benchmarks/bench_multi.py --out bench_out/multi

1. encodes carphone (bench_nvp's size: 32 frames of 176x144, HNeRV) into a store under ``--out`` (kept: a second
   run reuses it),
2. adapts it for both real-weights classifiers, EfficientNet-Lite0 (``blocks.4``) and MobileNetV2 (``features.6``),
   at one exit block (``--exit``), so the group has a shared exit,
3. builds the repository (``build-repo --tasks effnet_lite0 mobilenet_v2 --multi both=effnet_lite0,mobilenet_v2
   --no-baselines``, with ``--fuse`` if given),
4. starts ONE tritonserver and runs perf_analyzer (``clients.perf.run_perf``) on ``both`` and on each task's own
   NVP ensemble, in the same run, at each concurrency.

Both tasks answered separately cost one request to each ensemble: at a measured rate r_a and r_b (requests/s,
each ensemble alone at that concurrency) a client answering both per video gets 1 / (1/r_a + 1/r_b) videos/s;
the multi-task ensemble answers both in one request, r_multi videos/s. The table gives both and their ratio.
In each of ``--rounds`` rounds, per concurrency, the three ensembles run back to back (order multi, a, b, then
b, a, multi, ...), and the ratio is taken within the round: a load that comes and goes during the run (a shared
machine) hits both sides alike. The table gives the medians over rounds and every round's ratio, then (without
``--fuse``) each ensemble's steps' compute time per execution (the server's statistics around each measurement):
where the time goes.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from builder.api import encode_video
from builder.nvp.search import adapt_video
from builder.nvp.storage import pairing_file
from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.wire import FRAME_SELECTION, VIDEO_ID
from training.config import AdapterTrainConfig, TrainConfig

from bench_nvp import CLIPS  # noqa: E402 - the script's directory is on sys.path
from stub_rss import stub_rss_mb
from stub_rss import table as stub_table

LAYERS = {"effnet_lite0": "blocks.4", "mobilenet_v2": "features.6"}
GROUP = "both"
VIDEO = "bench-carphone"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/multi"))
    p.add_argument("--epochs", type=int, default=40, help="HNeRV epochs (default 40, as bench_nvp; throughput "
                                                          "does not depend on them)")
    p.add_argument("--exit", type=int, default=3, help="the exit block both tasks are adapted at (default 3)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4])
    p.add_argument("--window-ms", type=int, default=5000, help="perf_analyzer window; each level is 3 (default 5000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over the three ensembles, order alternating "
                                                         "(default 2)")
    p.add_argument("--fuse", action="store_true", help="build-repo --fuse: each ensemble one model (the server's "
                                                       "statistics then show no steps)")
    args = p.parse_args()
    import tritonclient.grpc as grpcclient
    from clients.perf import run_perf

    from builder.triton.server import TritonServer

    store = VideoStore(args.out / "store")
    frames, step, size = CLIPS["carphone"]
    if not store.exists(VIDEO):
        encode_video(sample_path("carphone"), VIDEO, store=store, arch="hnerv", count=frames, step=step, size=size,
                     model={"stem_dim": 48}, train=TrainConfig(recipe="hnerv", epochs=args.epochs, lr=3e-3))
    for task, layer in LAYERS.items():
        if pairing_file(task) not in store.entry(VIDEO)["files"]:
            adapt_video(store, VIDEO, task, exits=[args.exit], layers=[layer],
                        train=AdapterTrainConfig(init="ls", epochs=30, lr=1e-3, task_loss=1.0))
    repo = args.out / ("model_repository-fused" if args.fuse else "model_repository")
    subprocess.run([sys.executable, "-m", "builder", "build-repo", "--store", str(store.root), "--out", str(repo),
                    "--tasks", *LAYERS, *(f for t, l in LAYERS.items() for f in ("--layer", f"{t}={l}")),
                    "--multi", f"{GROUP}={','.join(LAYERS)}", "--no-baselines", "--no-progress",
                    *(["--fuse"] if args.fuse else [])], check=True)
    models = (GROUP, *LAYERS)
    runs: dict[int, list[dict[str, dict]]] = {c: [] for c in sorted(set(args.concurrency))}  # c -> rounds
    with tempfile.TemporaryDirectory() as tmp, TritonServer(repo, restricted=(), startup_timeout=600,
                                                            http_port=None, metrics_port=None) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        data = Path(tmp) / "data.json"
        data.write_text(json.dumps({"data": [{VIDEO_ID: [VIDEO], FRAME_SELECTION: ["auto"]}]}))
        for i in range(args.rounds):
            for c, rounds in runs.items():
                # back to back, order alternating: a load that comes and goes hits both sides alike
                rounds.append({})
                for m in models[::1 if i % 2 == 0 else -1]:
                    before = _step_stats(client)
                    rounds[-1][m] = run_perf(server.grpc_url, m, data, Path(tmp) / f"{m}.csv", [c], args.window_ms)[0]
                    rounds[-1][m]["steps"] = _step_ms(before, _step_stats(client))
                print(f"round {i + 1} c{c}: " + ", ".join(f"{m} {r['infer_per_s']:.2f}/s"
                                                          for m, r in rounds[-1].items()), file=sys.stderr)
        client.close()
        stubs = stub_rss_mb(server.pid, server.repository)  # after every ensemble has answered: each stub's caches are filled
    lines = ["| concurrency | one `both` request: videos/s | p50 ms | `effnet_lite0` req/s | `mobilenet_v2` req/s | "
             "separate requests: videos/s | multi / separate (per round) |", "|---:|---:|---:|---:|---:|---:|---|"]
    rows = []
    for c, rounds in runs.items():
        separate = [1 / sum(1 / r[m]["infer_per_s"] for m in LAYERS) for r in rounds]
        ratios = [r[GROUP]["infer_per_s"] / s for r, s in zip(rounds, separate)]
        med = {m: statistics.median(r[m]["infer_per_s"] for r in rounds) for m in models}
        rows.append({"concurrency": c, "multi": med[GROUP], "separate": statistics.median(separate),
                     "ratio": statistics.median(ratios), "ratios": ratios,
                     "multi_p50_ms": statistics.median(r[GROUP]["p50_ms"] for r in rounds)})
        lines.append(f"| {c} | {med[GROUP]:.2f} | {rows[-1]['multi_p50_ms']:.0f} | {med['effnet_lite0']:.2f} | "
                     f"{med['mobilenet_v2']:.2f} | {rows[-1]['separate']:.2f} | median {rows[-1]['ratio']:.2f}x "
                     f"({', '.join(f'{x:.2f}' for x in ratios)}) |")
    if not args.fuse:  # where a request's time goes, at the lowest concurrency (medians over rounds)
        lines += ["", f"| ensemble (concurrency {min(runs)}) | its steps: compute ms per execution |", "|---|---|"]
        for m in models:
            rounds = [r[m]["steps"] for r in runs[min(runs)]]
            lines.append(f"| `{m}` | " + ", ".join(f"`{s}` {statistics.median(r[s] for r in rounds):.0f}"
                                                   for s in rounds[0]) + " |")
    lines += ["", stub_table(stubs)]
    table = "\n".join(lines)
    (args.out / "multi.md").write_text(table + "\n")
    print(table)
    print(json.dumps({"machine": f"{platform.machine()}, {_cores()} cores", "rounds": args.rounds, "rows": rows}))
    return 0


def _step_stats(client) -> dict[str, tuple[int, int]]:
    """Each model's (executions, compute ns: input + infer + output) so far, from the server's statistics."""
    out = {}
    for st in client.get_inference_statistics(as_json=True)["model_stats"]:
        inf = st.get("inference_stats", {})
        out[st["name"]] = (int(st.get("execution_count", 0)),
                           sum(int(inf.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer",
                                                                           "compute_output")))
    return out


def _step_ms(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Mean compute ms per execution of each step model that ran between two snapshots (ensembles left out:
    their time is their steps')."""
    return {m: (ns - before[m][1]) / (n - before[m][0]) / 1e6 for m, (n, ns) in sorted(after.items())
            if n > before[m][0] and m not in (GROUP, *LAYERS)}


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
