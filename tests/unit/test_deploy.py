"""Kubernetes manifests (deploy/k8s): valid against the Kubernetes schemas (offline, kubernetes-validate's bundled
ones), consistent with the image, and the encode Job's row picking run for real with a stand-in ``python``."""
import copy
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.33"  # the oldest release with every field used here GA (Job backoffLimitPerIndex)


def docs() -> dict[str, dict]:
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            out[d["kind"]] = d
    return out


def test_every_manifest_validates_against_the_kubernetes_schemas():
    found = docs()
    assert set(found) == {"PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler", "Job"}
    for kind, d in found.items():
        kubernetes_validate.validate(d, KUBERNETES, strict=True)
    bad = copy.deepcopy(found["Deployment"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["cmd"] = ["x"]  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES, strict=True)


def test_servers_mount_the_store_read_only_and_check_every_model():
    d = docs()
    pod = d["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["store"]["readOnly"] and mounts["store"]["mountPath"] == "/data/store"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # readiness is the image's own HEALTHCHECK: every model of the repository, not only the server
    probe = c["readinessProbe"]["exec"]["command"]
    assert probe[:4] == ["python", "-m", "clients", "ready"] and "--repository" in probe
    assert "python -m clients ready" in (ROOT / "docker" / "Dockerfile").read_text()
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert probe[probe.index("--repository") + 1] == env["NVP_REPOSITORY"]
    labels = d["Deployment"]["spec"]["selector"]["matchLabels"]
    assert d["Service"]["spec"]["selector"] == labels
    assert {p["port"] for p in d["Service"]["spec"]["ports"]} == {8000, 8001, 8002}
    assert d["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == d["Deployment"]["metadata"]["name"]
    job = d["Job"]["spec"]
    assert job["completionMode"] == "Indexed" and job["template"]["spec"]["restartPolicy"] == "Never"


def _run_job(tmp_path: Path, index: int, stored: bool) -> subprocess.CompletedProcess:
    """The Job's script with /data paths moved under tmp_path and a ``python`` that records what it is asked."""
    (c,) = docs()["Job"]["spec"]["template"]["spec"]["containers"]
    script = c["args"][0].replace("/data/", f"{tmp_path}/data/")
    (tmp_path / "data" / "manifest").mkdir(parents=True)
    (tmp_path / "data" / "manifest" / "manifest.csv").write_text(
        "path,id,frames\n/data/sources/a.mp4,street,32\n/data/sources/b c.mp4,park\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n'
                    f'case "$3" in info) exit {0 if stored else 1};; esac\nexit 0\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_COMPLETION_INDEX": str(index)}
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)


def test_the_encode_job_encodes_its_row_and_skips_what_is_stored(tmp_path):
    r = _run_job(tmp_path, 1, stored=False)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[-1].startswith("-m builder encode /data/sources/b c.mp4 --id park --store ")
    r = _run_job(tmp_path / "again", 0, stored=True)
    assert r.returncode == 0 and "street is stored already: skipped" in r.stdout
    assert "builder encode" not in (tmp_path / "again" / "calls").read_text()
    r = _run_job(tmp_path / "past", 5, stored=False)
    assert r.returncode == 1 and "manifest.csv has no row 6" in r.stderr
