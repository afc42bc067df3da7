"""Each Python-backend stub's resident memory in a running repository (docs/BENCHMARKS.md, "Multi-task requests"):

  PYTHONPATH=. python benchmarks/stub_rss.py --repo REPO --video ID --ensembles both effnet_lite0 mobilenet_v2

starts ONE tritonserver on ``--repo``, sends ``--requests`` requests (``frame_selection=auto``) to each ensemble so
that every stub has loaded what it serves, and prints one row per model: its stub processes and their RSS, split
into what is mapped from files (libraries: ``RssFile``), heap (``RssAnon``) and shared memory (``RssShmem``).
It imports only ``builder.triton.server``, so it also measures a repository built by an older commit
(``PYTHONPATH`` at that commit's checkout).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

FIELDS = ("VmRSS", "RssFile", "RssAnon", "RssShmem")


def stub_rss_mb(server_pid: int, repository: Path) -> dict[str, dict[str, float]]:
    """model -> {"stubs": n, "VmRSS": MB, "RssFile": MB, ...} summed over its Python-backend stubs. The stubs are
    found as the server's supervisor finds them (``builder.triton.server._python_stubs``, the same at 6438ca2)."""
    from builder.triton.server import _python_stubs

    out: dict[str, dict[str, float]] = {}
    for pid, (model, _instance, _parent) in _python_stubs(server_pid, repository)[0].items():
        try:
            status = {line.split(":")[0]: int(line.split()[1]) / 1024
                      for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(FIELDS)}
        except OSError:  # gone meanwhile
            continue
        row = out.setdefault(model, dict.fromkeys(("stubs", *FIELDS), 0.0))
        row["stubs"] += 1
        for k in FIELDS:
            row[k] += status.get(k, 0.0)
    return out


def table(stubs: dict[str, dict[str, float]]) -> str:
    lines = ["| Python-backend stub (model) | instances | RSS MB | of it: files | heap | shared memory |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| `{m}` | {r['stubs']:.0f} | " + " | ".join(f"{r[k]:.0f}" for k in FIELDS) + " |"
              for m, r in sorted(stubs.items())]
    lines.append(f"| all stubs | {sum(r['stubs'] for r in stubs.values()):.0f} | "
                 + " | ".join(f"{sum(r[k] for r in stubs.values()):.0f}" for k in FIELDS) + " |")
    return "\n".join(lines)


def main() -> int:
    import tritonclient.grpc as grpcclient

    from builder.triton.server import TritonServer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, required=True, help="a model repository written by build-repo")
    p.add_argument("--video", required=True, help="a video ID every ensemble serves")
    p.add_argument("--ensembles", nargs="+", required=True, help="the ensembles to ask (video_id, frame_selection)")
    p.add_argument("--requests", type=int, default=3, help="requests per ensemble before measuring (default 3)")
    args = p.parse_args()
    with TritonServer(args.repo, restricted=(), startup_timeout=600, http_port=None, metrics_port=None) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for name in args.ensembles:
            inputs = []
            for tensor, value in (("video_id", args.video), ("frame_selection", "auto")):
                inputs.append(grpcclient.InferInput(tensor, [1], "BYTES"))
                inputs[-1].set_data_from_numpy(np.array([value.encode()], dtype=object))
            for _ in range(args.requests):
                client.infer(name, inputs)
        client.close()
        time.sleep(1)
        stubs = stub_rss_mb(server.pid, server.repository)
    print(table(stubs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
