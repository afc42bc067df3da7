"""``python -m builder`` when the file system says no, when a path is not UTF-8, and when two encodes race: one
line each, never a traceback; real files, a real second process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.cli import main
from builder.samples import sample_path

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--frames", "4", "--size", "64x48", "--arch", "nerv", "--stem-dim", "8", "--lower-width", "8",
        "--mlp-dim", "32", "--no-progress"]


def _writable(d: Path) -> bool:
    try:
        (d / ".probe").touch()
    except OSError:
        return False
    (d / ".probe").unlink()
    return True


@pytest.fixture
def read_only_store(tmp_path):
    """A store directory this user cannot write: chmod, or for root (whom chmod does not stop) the immutable
    attribute; skipped only where neither takes effect."""
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o555)
    immutable = False
    if _writable(store):
        immutable = shutil.which("chattr") is not None and subprocess.run(
            ["chattr", "+i", str(store)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("running as root: neither chmod nor chattr +i makes the store read-only here")
    yield store
    if immutable:
        subprocess.run(["chattr", "-i", str(store)], check=True)
    store.chmod(0o755)


def test_read_only_store_is_one_line_before_training(read_only_store, tmp_path, capsys):
    t0 = time.perf_counter()
    rc = main(["encode", str(sample_path("carphone")), "--id", "car", "--store", str(read_only_store), "--epochs",
               "50", *TINY, "--json"])
    took = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert str(read_only_store) in lines[0] and ("--store DIR" in lines[0]), lines[0]
    assert out.strip().splitlines()[-1].startswith('{"error": ')
    assert took < 20, f"refused after {took:.1f} s: it trained first"  # 50 epochs would take longer


def test_info_prints_a_source_path_that_is_not_utf8(tmp_path, capsys):
    clip = Path(os.fsdecode(os.fsencode(tmp_path) + b"/clip\xff.mp4"))
    shutil.copyfile(sample_path("carphone"), clip)
    store = str(tmp_path / "store")
    assert main(["encode", str(clip), "--id", "odd", "--store", store, "--epochs", "1", *TINY]) == 0
    capsys.readouterr()
    assert main(["info", "odd", "--store", store]) == 0  # pytest's captured stdout is strict UTF-8, like a pipe
    out = capsys.readouterr().out
    assert "clip\\udcff.mp4" in out
    assert main(["info", "odd", "--store", store, "--json"]) == 0
    assert '"source": ' in capsys.readouterr().out.splitlines()[-1]


def test_second_encode_of_an_id_fails_at_once(tmp_path, capsys):
    store = tmp_path / "store"
    first = subprocess.Popen(
        [sys.executable, "-m", "builder", "encode", str(sample_path("carphone")), "--id", "busy", "--store",
         str(store), "--epochs", "100000", *TINY], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lock = store / ".locks" / "busy.encode"
        deadline = time.monotonic() + 180  # the first process imports torch and the store on a busy machine
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first encode never took its lock"
            time.sleep(0.2)
        t0 = time.perf_counter()
        rc = main(["encode", str(sample_path("carphone")), "--id", "busy", "--store", str(store), "--epochs", "1",
                   *TINY])
        took = time.perf_counter() - t0
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1, err
        assert err[0] == (f"error: video 'busy' is being encoded by another process (pid {first.pid}); wait for it "
                          "to finish, or encode under another ID")
        assert took < 5, f"refused after {took:.1f} s"
        assert first.poll() is None  # the first one trains on, undisturbed
    finally:
        first.terminate()
        first.wait(timeout=60)
    assert main(["encode", str(sample_path("carphone")), "--id", "busy", "--store", str(store), "--epochs", "1",
                 *TINY]) == 0  # the kernel released the lock with the process
