"""Choosing the NVP pair by measurement: the Pareto front of agreement vs ms per frame, and the budget rule
(pure functions on synthetic measurement rows), plus the raw-prediction stability and timing helpers."""
import pytest
import torch

from builder.nvp import pareto_front, select_pair
from builder.protocols import ms_per_frame, prediction_stability


def row(name, ms, acc, vid):
    return {"name": name, "ms_per_frame": ms, "accuracy": acc, "video_accuracy": vid}


ROWS = [
    row("fast-bad", 1.0, 0.25, 0.0),
    row("fast-bad-dominated", 2.0, 0.125, 0.0),  # slower and worse than fast-bad
    row("mid-video", 3.0, 0.5, 1.0),
    row("mid-video-tie-slower", 3.5, 0.5, 1.0),  # same quality, slower
    row("good", 5.0, 1.0, 1.0),
    row("good-but-slowest", 9.0, 1.0, 1.0),
    row("frames-but-not-video", 4.0, 0.875, 0.0),  # video-level quality ranks first: mid-video dominates it
]


def names(rows):
    return [r["name"] for r in rows]


def test_pareto_front_is_the_staircase_of_undominated_rows():
    front = pareto_front(ROWS)
    assert names(front) == ["fast-bad", "mid-video", "good"]
    ms = [r["ms_per_frame"] for r in front]
    assert ms == sorted(ms)
    # no front point is dominated by any row
    for f in front:
        assert not any(r["ms_per_frame"] <= f["ms_per_frame"] and (r["video_accuracy"], r["accuracy"])
                       > (f["video_accuracy"], f["accuracy"]) for r in ROWS)


def test_select_takes_the_fastest_pair_meeting_the_budget():
    chosen, met = select_pair(ROWS, 0.95)
    assert met and chosen["name"] == "good"
    chosen, met = select_pair(ROWS, 0.5)
    assert met and chosen["name"] == "mid-video"
    chosen, met = select_pair(ROWS, 0.0)
    assert met and chosen["name"] == "fast-bad"


def test_select_falls_back_to_the_most_accurate_then_fastest():
    rows = [r for r in ROWS if r["accuracy"] < 1.0]
    chosen, met = select_pair(rows, 0.95)
    assert not met and chosen["name"] == "mid-video"  # video-level agreement first, the cheaper of the tie
    with pytest.raises(ValueError, match="no measured pairs"):
        select_pair([], 0.9)


def test_rows_without_video_level_scores_use_accuracy():
    rows = [{"ms_per_frame": 2.0, "accuracy": 0.6}, {"ms_per_frame": 1.0, "accuracy": 0.4}]
    assert [r["accuracy"] for r in pareto_front(rows)] == [0.4, 0.6]
    assert select_pair(rows, 0.5) == (rows[0], True)


def test_prediction_stability():
    logits = torch.zeros(4, 10)
    logits[:3, 2] = 5.0  # three frames say class 2, one says class 7
    logits[3, 7] = 5.0
    s = prediction_stability(logits)
    assert s["frames_agreeing_with_video_top1"] == pytest.approx(0.75)
    assert 0.9 < s["mean_top1_prob"] < 1.0


def test_ms_per_frame_is_a_positive_median():
    calls = []
    ms = ms_per_frame(lambda: calls.append(1), frames=4, repeats=3)
    assert len(calls) == 4 and ms >= 0  # one warm-up + three timed
    with pytest.raises(ValueError):
        ms_per_frame(lambda: None, frames=0)


def test_shortlist_measures_every_layer_once_before_any_layer_twice():
    from builder.nvp.search import Candidate, shortlist

    # CKA's order: early layers first, the deep one last (as measured on real clips)
    ranking = [Candidate(1, "bn1", 0.96, 0.96), Candidate(2, "bn1", 0.95, 0.95), Candidate(1, "blocks.0", 0.94, 0.94),
               Candidate(2, "blocks.0", 0.93, 0.93), Candidate(1, "blocks.6", 0.80, 0.80),
               Candidate(2, "blocks.6", 0.79, 0.79)]
    pick = [(c.exit_block, c.layer) for c in shortlist(ranking, 4)]
    assert pick == [(1, "bn1"), (1, "blocks.0"), (1, "blocks.6"), (2, "bn1")]
    assert [(c.exit_block, c.layer) for c in shortlist(ranking, 2)] == [(1, "bn1"), (1, "blocks.0")]
    everything = [(c.exit_block, c.layer) for c in shortlist(ranking, 99)]
    assert everything == [(1, "bn1"), (1, "blocks.0"), (1, "blocks.6"), (2, "bn1"), (2, "blocks.0"), (2, "blocks.6")]
