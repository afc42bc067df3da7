"""``python -m clients.perf``: throughput of each task's NVP ensemble against its two baselines, with perf_analyzer.

For every task and path (``<task>``, ``<task>_fulldecode``, ``<task>_codec``) it runs perf_analyzer over gRPC on
the same server in one run, with input data holding real video IDs from the store (requests cycle through them),
sweeping the concurrency; then it holds one load (default: concurrency 8 for 60 s) per path and reports failed
requests from the server's own statistics. It writes ``perf.csv``, ``perf.md`` (side-by-side table with the NVP
path's throughput as a ratio of each baseline) and ``perf.png``.

By default it starts its own tritonserver on free ports from ``--repo`` (perf_analyzer reads the model
configuration, an API the ``serve`` command restricts); ``--url`` uses a running server started with
``serve --unrestricted``.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "parse_perf_csv", "run_perf"]

from builder.triton.wire import FRAME_INDICES, FRAME_SELECTION, PATHS, VIDEO_ID, ensemble_name

from .common import ask_task


def parse_perf_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's ``-f`` CSV: one row per concurrency; latencies converted from us to ms."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({
                "concurrency": int(r["Concurrency"]),
                "infer_per_s": float(r["Inferences/Second"]),
                **{f"p{q}_ms": float(r[f"p{q} latency"]) / 1000 for q in (50, 90, 99)},
                "server_queue_ms": float(r.get("Server Queue", 0) or 0) / 1000,
                "server_compute_ms": sum(float(r.get(k, 0) or 0) for k in
                                         ("Server Compute Input", "Server Compute Infer",
                                          "Server Compute Output")) / 1000,
            })
    return rows


def _fail_count(client: Any, model: str) -> tuple[int, int]:
    """(successful, failed) inference counts of ``model`` from the server's statistics."""
    stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]["inference_stats"]
    return int(stats.get("success", {}).get("count", 0)), int(stats.get("fail", {}).get("count", 0))


def run_perf(url: str, model: str, data_file: Path, out_csv: Path, concurrency: Sequence[int],
             window_ms: int, timeout: float = 3600) -> list[dict[str, float]]:
    """perf_analyzer (gRPC) on one model (an ensemble), one run per concurrency level (a failing level names itself). Each
    level is the mean of 3 windows of ``window_ms``: stability is not required (these machines are noisy; a
    stability rule would only turn noise into failures), so the spread shows in the p99 column instead."""
    from builder.triton.install import locate_perf_analyzer

    exe, env = locate_perf_analyzer()
    rows: list[dict[str, float]] = []
    for c in sorted(set(concurrency)):
        level_csv = out_csv.with_suffix(f".c{c}.csv")
        cmd = [str(exe), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data_file),
               "--concurrency-range", str(c), "--measurement-interval", str(window_ms), "-f", str(level_csv),
               "--stability-percentage", "999", "--max-trials", "3"]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0 or not level_csv.is_file():
            tail = " ".join((p.stderr or p.stdout).split())[-400:]
            raise RuntimeError(f"perf_analyzer failed for {model} at concurrency {c}: {tail}")
        rows += parse_perf_csv(level_csv)
    return rows


def _table(results: list[dict[str, Any]], hold: list[dict[str, Any]]) -> str:
    lines = ["| task | concurrency | path | infer/s | frames/s | NVP / path | p50 ms | p99 ms |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    key = {(r["task"], r["concurrency"], r["path"]): r for r in results}
    for r in sorted(results, key=lambda r: (r["task"], r["concurrency"], PATHS.index(r["path"]))):
        nvp = key.get((r["task"], r["concurrency"], "nvp"))
        ratio = f"{nvp['infer_per_s'] / r['infer_per_s']:.2f}x" if nvp and r["infer_per_s"] > 0 else "-"
        lines.append(f"| {r['task']} | {r['concurrency']} | {r['path']} | {r['infer_per_s']:.2f} | "
                     f"{r['frames_per_s']:.1f} | {ratio} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    if hold:
        lines += ["", "| task | path | concurrency | seconds | requests ok | failed | infer/s | p99 ms |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {h['task']} | {h['path']} | {h['concurrency']} | {h['seconds']:.0f} | {h['ok']} | {h['failed']} "
                  f"| {h['infer_per_s']:.2f} | {h['p99_ms']:.1f} |" for h in hold]
    return "\n".join(lines) + "\n"


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for p, style in zip(PATHS, ("o-", "s--", "^:")):
            rows = sorted((r for r in results if r["task"] == task and r["path"] == p), key=lambda r: r["concurrency"])
            if rows:
                ax.plot([r["concurrency"] for r in rows], [r["frames_per_s"] for r in rows], style, label=p)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel("frames / s")
        ax.set_title(f"{task}: Triton throughput")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clients.perf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path("model_repository"),
                   help="repository to serve (default model_repository); ignored with --url")
    p.add_argument("--url", help="use this running server (gRPC host:port, started with serve --unrestricted)")
    p.add_argument("--tasks", nargs="+", help="tasks to measure (default: every task in the repository)")
    p.add_argument("--videos", nargs="+", help="video IDs to request (default: every video served for the task)")
    p.add_argument("--frames", default="auto", help="frame selection per request (default auto: the protocol)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4, 8], help="sweep (default 1 2 4 8)")
    p.add_argument("--window-ms", type=int, default=5000,
                   help="perf_analyzer measurement window; each level is 3 windows (default 5000)")
    p.add_argument("--hold-concurrency", type=int, default=8, help="held load's concurrency (default 8)")
    p.add_argument("--hold-seconds", type=int, default=60,
                   help="held load's duration (3 windows of a third each); 0 skips it (default 60)")
    p.add_argument("--out", type=Path, default=Path("bench_out/perf"), help="output directory (default bench_out/perf)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = _run(args)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(summary["table"])
    print(f"wrote {summary['csv']}, {summary['markdown']}, {summary['plot']}")
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "table"}))
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    from builder.triton.server import TritonServer

    manifest_file = args.repo / "nvp_repository.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {"tasks": {}}
    tasks = args.tasks or list(manifest["tasks"])
    if not tasks:
        raise ValueError(f"no tasks: {manifest_file} lists none; build the repository with 'python -m builder "
                         "build-repo --tasks ...' or pass --tasks")
    args.out.mkdir(parents=True, exist_ok=True)
    server = None
    if args.url is None:
        server = TritonServer(args.repo, restricted=(), startup_timeout=600, http_port=None, metrics_port=None)
        server.start()
    url = args.url or server.grpc_url
    results: list[dict[str, Any]] = []
    hold: list[dict[str, Any]] = []
    try:
        client = grpcclient.InferenceServerClient(url)
        with tempfile.TemporaryDirectory() as tmp:
            for task in tasks:
                videos = args.videos or manifest["tasks"].get(task, {}).get("videos") or []
                if not videos:
                    raise ValueError(f"no videos for {task}: pass --videos ID ...")
                data = Path(tmp) / f"{task}.json"
                data.write_text(json.dumps({"data": [{VIDEO_ID: [v], FRAME_SELECTION: [args.frames]}
                                                     for v in videos]}))
                # frames per request, from one real answer
                frames = len(ask_task(client, url, task, videos[0], args.frames, "nvp", [FRAME_INDICES])
                             [FRAME_INDICES])
                for path in PATHS:
                    rows = run_perf(url, ensemble_name(task, path), data, Path(tmp) / f"{task}-{path}.csv",
                                    args.concurrency, args.window_ms)
                    results += [{"task": task, "path": path, "model": ensemble_name(task, path), "frames": frames,
                                 "frames_per_s": r["infer_per_s"] * frames, **r} for r in rows]
                    print(f"{ensemble_name(task, path)}: " + ", ".join(f"c{r['concurrency']} {r['infer_per_s']:.2f}/s"
                                                                for r in rows), file=sys.stderr)
                for path in PATHS if args.hold_seconds > 0 else ():
                    before = _fail_count(client, ensemble_name(task, path))
                    t0 = time.monotonic()
                    rows = run_perf(url, ensemble_name(task, path), data, Path(tmp) / f"{task}-{path}-hold.csv",
                                    [args.hold_concurrency], max(1000, args.hold_seconds * 1000 // 3))
                    after = _fail_count(client, ensemble_name(task, path))
                    hold.append({"task": task, "path": path, "concurrency": args.hold_concurrency,
                                 "seconds": time.monotonic() - t0, "ok": after[0] - before[0],
                                 "failed": after[1] - before[1], **{k: rows[-1][k] for k in ("infer_per_s", "p99_ms")}})
        client.close()
    finally:
        if server is not None:
            server.stop()
    csv_path, md_path, png_path = args.out / "perf.csv", args.out / "perf.md", args.out / "perf.png"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    table = _table(results, hold)
    md_path.write_text(table)
    _plot(results, png_path)
    return {"results": results, "hold": hold, "table": table, "csv": str(csv_path), "markdown": str(md_path),
            "plot": str(png_path), "failed": sum(h["failed"] for h in hold)}


if __name__ == "__main__":
    sys.exit(main())
