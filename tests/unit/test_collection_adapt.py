"""``adapt COLLECTION``: one adapter per exit block for every member, trained on some members and chosen on the
others; members without adapters of their own are answered by the collection's."""
import pytest

from builder.nvp.shared import adapt_collection, split_members
from builder.nvp.storage import adapter_holder, load_adapter, load_pairing
from conftest import tiny_collection


def test_split_members_holds_out_every_other_video_by_default():
    assert split_members(["a", "b", "c", "d", "e"], None) == (["a", "c", "e"], ["b", "d"])
    assert split_members(["a", "b", "c"], ["c"]) == (["c"], ["a", "b"])
    with pytest.raises(ValueError, match="at least 2 videos"):
        split_members(["a"], None)
    with pytest.raises(ValueError, match="not in the collection: z"):
        split_members(["a", "b"], ["z"])
    with pytest.raises(ValueError, match="one to measure on"):
        split_members(["a", "b"], ["a", "b"])


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    store = tiny_collection(tmp_path_factory.mktemp("store"), frames=12)
    r = adapt_collection(store, "col", "effnet_lite0", exits=[1, 2], layers=["blocks.6"], top_k=2, repeats=1,
                         progress=False)
    return store, r


def test_the_collection_holds_one_adapter_measured_on_the_video_it_never_trained_on(adapted):
    store, r = adapted
    assert r["train_videos"] == ["col-0"] and r["heldout_videos"] == ["col-1"]
    assert list(r["per_video"]) == ["col-1"] and len(r["validation_frames"]["col-1"]) == 12
    assert set(r["train_frames"]) == {"col-0"} and len(r["train_frames"]["col-0"]) == 3  # a quarter of 12
    assert 0.0 <= r["accuracy"] <= 1.0 and r["codec"] is not None and "accuracy" in r["constant_baseline"]
    coll = store.video("col")
    assert set(coll.adapters("effnet_lite0")) == set(r["stored_exits"])
    assert not store.video("col-0").adapters("effnet_lite0")  # stored once, not per member


def test_members_read_the_collection_adapter_bound_to_the_shared_decoder(adapted):
    store, r = adapted
    k = r["exit_block"]
    for member in ("col-0", "col-1"):
        assert adapter_holder(store, member, "effnet_lite0") == "col"
        adapters, meta = load_adapter(store, member, "effnet_lite0", k, inr_sha256=store.inr_digest(member))
        assert meta["layer"] == "blocks.6" and adapters.num_params() == r["adapter_params"]
    assert load_pairing(store, "col-0", "effnet_lite0")["train_frames"] == r["train_frames"]["col-0"]
    held = load_pairing(store, "col-1", "effnet_lite0")
    assert held["train_frames"] == [] and held["collection"] == "col"
    assert adapter_holder(store, "col-0", "mobilenet_v2") == "col-0"  # not adapted for it: nothing to borrow


def test_evaluate_scores_every_frame_of_a_held_out_member(adapted):
    from builder.nvp.evaluate import evaluate_task

    store, r = adapted
    e = evaluate_task(store, ["col-1"], "effnet_lite0", repeats=1)
    assert e["heldout_frames"] == 12  # none of its frames trained the adapter
    assert e["constant_baseline"] is None  # no training frames of its own (adapt reports the collection's)
    assert 0.0 <= e["paths"]["nvp"]["heldout_accuracy"] <= 1.0
