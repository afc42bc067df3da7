"""The clients are thin: tritonclient and numpy, never torch or PyAV (checked in a fresh interpreter), and they
speak the server's names (builder.triton.wire) and frame grammar (builder.selection)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import importlib, json, pkgutil, sys
import clients
names = sorted(m.name for m in pkgutil.iter_modules(clients.__path__))
for name in names:
    importlib.import_module(f"clients.{name}")
from clients.__main__ import build_parser
parser = build_parser()
parser.parse_args(["decode", "--video", "v", "--frames", "0-3,8"])
parser.parse_args(["effnet_lite0", "--video", "v", "--frames", "consecutive:4@2"])
from clients.common import connect
connect("127.0.0.1:1").close()  # loads tritonclient.grpc
print(json.dumps({"modules": names, "loaded": sorted(m for m in ("torch", "av", "torchvision") if m in sys.modules),
                  "tritonclient": "tritonclient.grpc" in sys.modules}))
"""


def test_clients_import_neither_torch_nor_pyav():
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"common", "decode", "classify", "detect", "caption", "perf", "ready", "__main__"} <= set(report["modules"])
    assert report["tritonclient"]
    assert report["loaded"] == []


def test_task_commands_check_the_frame_grammar_before_asking():
    from clients.common import parse_selection
    from clients.__main__ import main

    assert parse_selection(" uniform:4 ") == " uniform:4 "  # sent as written: the server resolves it
    with pytest.raises(argparse.ArgumentTypeError, match="Use auto, uniform"):
        parse_selection("every other frame")
    with pytest.raises(SystemExit) as e:
        main(["effnet_lite0", "--video", "car", "--frames", "1;rm -rf /", "--url", "127.0.0.1:1"])
    assert e.value.code == 2


def test_clients_use_the_served_names():
    from builder.triton.wire import PATHS, ensemble_name
    from clients import caption, classify, decode, detect

    assert [ensemble_name("blip", p) for p in PATHS] == ["blip", "blip_fulldecode", "blip_codec"]
    with pytest.raises(ValueError, match="path must be one of"):
        ensemble_name("blip", "raw")
    assert decode.MODEL == "decode"
    assert {"labels", "scores", "frame_indices"} <= set(classify.OUTPUTS)
    assert {"boxes", "box_frames"} <= set(detect.OUTPUTS) and "captions" in caption.OUTPUTS


def test_ready_repository_lists_the_models_a_health_check_expects(tmp_path):
    from clients.common import ClientError
    from clients.ready import expected_models

    for name in ("decode", "classify_nvp"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text("")
    (tmp_path / "notes").mkdir()  # no config: not a model
    assert expected_models(tmp_path) == ["classify_nvp", "decode"]
    with pytest.raises(ClientError, match="not a model repository folder"):
        expected_models(tmp_path / "missing")
