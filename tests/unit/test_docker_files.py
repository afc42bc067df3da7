"""The Docker deployment's defaults, read from the files (no Docker engine here): ports published on loopback
unless told otherwise, an NGC release with the August 2025 security fixes, a stub of that same release."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
FIXED_RELEASE = (25, 7)  # NGC 25.07 = Triton 2.59.1, the first with the August 2025 fixes (docker/README.md)


def expand(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` interpolation."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m[1]) or (m[2] or ""), value)


def test_compose_publishes_on_loopback_unless_told_otherwise():
    ports = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["triton"]["ports"]
    assert {p.rsplit(":", 1)[1] for p in ports} == {"8000", "8001", "8002"}
    for port in ports:
        assert expand(port, {}).split(":")[0] == "127.0.0.1", port
        assert expand(port, {"NVP_PUBLISH_ADDRESS": "0.0.0.0"}).split(":")[0] == "0.0.0.0", port


def test_image_is_a_release_with_the_august_2025_fixes_and_its_own_stub():
    text = (DOCKER / "Dockerfile").read_text()
    release = re.search(r"^ARG TRITON_RELEASE=(\d+)\.(\d+)$", text, re.M)
    assert release and tuple(map(int, release.groups())) >= FIXED_RELEASE
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3-min",
                     "nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3"]
    assert '-b "r${TRITON_RELEASE}"' in text  # the stub is built from the same release's python_backend
    assert not re.search(r"^EXPOSE", text, re.M)  # `docker run -P` would publish on every interface


def test_entrypoint_is_valid_sh():
    subprocess.run(["sh", "-n", str(DOCKER / "entrypoint.sh")], check=True)
