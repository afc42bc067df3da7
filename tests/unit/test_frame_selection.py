"""The frame-selection grammar (builder.selection): parsing alone (what clients check) and resolving against a
video and a task's clip (what the served models and the evaluation protocols do)."""
from __future__ import annotations

import pytest

from builder.selection import (
    Selection,
    SelectionError,
    consecutive_frames,
    parse_frame_list,
    uniform_frames,
)


@pytest.mark.parametrize("text,parsed,canonical", [
    ("auto", Selection("auto"), "auto"),
    (" AUTO ", Selection("auto"), "auto"),
    ("uniform", Selection("uniform"), "uniform"),
    ("uniform:4", Selection("uniform", 4), "uniform:4"),
    ("consecutive", Selection("consecutive"), "consecutive"),
    ("consecutive:3@5", Selection("consecutive", 3, 5), "consecutive:3@5"),
    ("consecutive@10", Selection("consecutive", None, 10), "consecutive@10"),
    ("0-3, 9", Selection("list", indices=(0, 1, 2, 3, 9)), "0,1,2,3,9"),
])
def test_parse_and_canonical_text(text, parsed, canonical):
    sel = Selection.parse(text)
    assert sel == parsed and str(sel) == canonical
    assert Selection.parse(str(sel)) == sel


@pytest.mark.parametrize("text,message", [
    ("", "invalid frame list"),
    ("uniform:", "invalid frame list"),
    ("../x", "invalid frame list"),
    ("1;rm -rf /", "invalid frame list"),
    ("5-2", "end is before the start"),
    ("0-99", "at most 16"),
    ("consecutive:999999", "at most 16"),  # refused from the text: nothing expanded
    ("uniform:17", "at most 16"),
])
def test_malformed_selections_are_refused_before_any_video(text, message):
    with pytest.raises(SelectionError, match=message):
        Selection.parse(text, max_frames=16)
    assert issubclass(SelectionError, ValueError)


def test_resolving_follows_the_task_protocol():
    image, clip = dict(clip=8, consecutive=False), dict(clip=32, consecutive=True)
    assert Selection.parse("auto").frames(50, **image) == uniform_frames(50, 8, 0)
    assert Selection.parse("auto").frames(50, **clip) == consecutive_frames(50, 32, 0)
    assert Selection.parse("auto").frames(50, **image, seed=3) == uniform_frames(50, 8, 3)
    assert Selection.parse("uniform").frames(50, **clip) == uniform_frames(50, 32, 0)  # count: the task's clip
    assert Selection.parse("uniform:0").frames(50, **image) == []
    assert Selection.parse("consecutive:3@5").frames(50, **image) == [5, 6, 7]
    assert Selection.parse("consecutive:4").frames(50, **image) == consecutive_frames(50, 4, 0)
    assert Selection.parse("7,7,1").frames(5, **image) == [7, 7, 1]  # range checks are the caller's
    with pytest.raises(SelectionError, match="needs 32 consecutive frames but the video has 20"):
        Selection.parse("auto").frames(20, **clip)


def test_protocol_sampling():
    idx = uniform_frames(32, 8, 0)
    assert len(idx) == 8 and all(b - a == 4 for a, b in zip(idx, idx[1:]))
    assert uniform_frames(5, 8) == [0, 1, 2, 3, 4]
    start = consecutive_frames(40, 32, 1)[0]
    assert consecutive_frames(40, 32, 1) == list(range(start, start + 32)) and 0 <= start <= 8
    assert parse_frame_list("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
