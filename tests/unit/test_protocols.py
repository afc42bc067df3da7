"""Scoring protocols: detection mAP against raw-frame detections, caption CLIP score against raw-frame captions."""
import math

import pytest
import torch

from builder.protocols import CaptionScorer, caption_scores, detection_scores, detections


def _detr_out(classes, probs, boxes, num_labels=3):
    """DETR-shaped (logits, boxes) for one image whose queries predict ``classes`` with ``probs``."""
    q = len(classes)
    logits = torch.full((1, q, num_labels + 1), -20.0)
    for i, (c, p) in enumerate(zip(classes, probs)):
        logits[0, i, c] = math.log(p)
        logits[0, i, -1] = math.log(1 - p)  # the rest goes to "no object"
    return logits, torch.tensor([boxes], dtype=torch.float32)


BOXES = [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4], [0.5, 0.5, 0.1, 0.1]]


def test_detections_follow_detr_post_processing():
    logits, boxes = _detr_out([0, 2, 1], [0.9, 0.8, 0.2], BOXES)
    d = detections(logits, boxes, threshold=0.5)[0]
    assert d["labels"].tolist() == [0, 2] and d["scores"][0] == pytest.approx(0.9, abs=1e-4)
    assert len(detections(logits, boxes)[0]["labels"]) == 3  # no threshold: every query


def test_detection_map_is_one_against_itself_and_drops_when_boxes_move():
    raw = _detr_out([0, 2, 1], [0.9, 0.8, 0.2], BOXES)
    same = detection_scores(raw, raw)
    assert same["accuracy"] == pytest.approx(1.0) and same["map_50"] == pytest.approx(1.0)
    assert same["pseudo_gt"] == 2  # the 0.2-score query is below the threshold
    moved = _detr_out([0, 2, 1], [0.9, 0.8, 0.2], [[0.6, 0.3, 0.2, 0.2]] + BOXES[1:])
    half = detection_scores(moved, raw)
    assert half["accuracy"] == pytest.approx(0.5, abs=0.02)  # one of two classes found
    wrong = _detr_out([1, 0, 1], [0.9, 0.8, 0.2], BOXES)  # right boxes, wrong classes
    assert detection_scores(wrong, raw)["accuracy"] == pytest.approx(0.0)


def test_detection_map_is_nan_without_pseudo_ground_truth():
    raw = _detr_out([0, 1, 2], [0.1, 0.2, 0.3], BOXES)
    r = detection_scores(raw, raw)
    assert math.isnan(r["accuracy"]) and r["pseudo_gt"] == 0


def _bag_of_words(texts):
    vocab = sorted({w for t in texts for w in t.split()})
    return torch.tensor([[float(w in t.split()) for w in vocab] for t in texts])


def test_caption_scores_map_clip_score_to_unit_interval():
    r = caption_scores(["a dog runs", "a red car"], ["a dog runs", "a blue bus"], _bag_of_words)
    assert r["exact_match"] == 0.5
    # frame 1 identical (1.0), frame 2 shares one of three words (cos 1/3)
    assert r["accuracy"] == pytest.approx((1 + 1 / 3) / 2) and r["clip_score"] == pytest.approx(100 * r["accuracy"])
    with pytest.raises(ValueError, match="one caption per raw caption"):
        caption_scores(["a"], ["a", "b"], _bag_of_words)


def test_caption_scorer_reuses_raw_captions():
    calls = []

    def caption(x):
        calls.append(x)
        return [f"thing {int(v)}" for v in x]

    s = CaptionScorer(caption, _bag_of_words)
    raw = torch.tensor([1.0, 2.0])
    assert s(raw, raw)["accuracy"] == 1.0
    s(torch.tensor([1.0, 3.0]), raw)
    assert len(calls) == 2  # raw captioned once, the path once
