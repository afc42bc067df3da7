"""build-repo records the layer each task is served from in the store; a server's store is mounted read-only."""
import errno
from pathlib import Path

from builder.nvp.storage import record_served_layers, served_layer
from builder.store import VideoStore


def test_the_served_layer_is_recorded_and_read_back(tmp_path):
    store = VideoStore(tmp_path)
    record_served_layers(store, {"effnet_lite0": "blocks.6"})
    assert served_layer(store, "effnet_lite0") == "blocks.6" and served_layer(store, "mobilenet_v2") is None


def test_a_read_only_store_keeps_no_record_and_says_so(tmp_path, monkeypatch, capsys):
    store = VideoStore(tmp_path)

    def read_only(self, *a, **k):  # root ignores chmod here: the mount's refusal, as the OS gives it
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    record_served_layers(store, {"effnet_lite0": "blocks.6"})  # the server still starts
    err = capsys.readouterr().err
    assert "not recorded" in err and "Read-only file system" in err and "--layers blocks.6" in err
    monkeypatch.undo()
    assert served_layer(store, "effnet_lite0") is None
