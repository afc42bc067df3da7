"""Which frames of a video to read: the frame-selection grammar, and the evaluation protocols' frame sampling.

One torch-free module (the thin clients import it) used wherever frames are chosen by text: the clients' flags,
the served task models' ``frame_selection`` tensor, and the builder's command line::

    auto                    the task's protocol: `uniform` for image tasks, `consecutive` for clip (action) tasks
    uniform[:N]             N frames at uniform intervals with a seeded phase (default N: the task's clip length)
    consecutive[:N][@S]     N consecutive frames from S (default: a seeded random start)
    uniform:P%, consecutive:P%[@S]
                            the same with N = P percent of the video's frames (at least 1): `adapt --train-frames`
    0-7,12                  explicit indices and inclusive ranges, in the given order (repeats allowed)

:meth:`Selection.parse` checks the text alone (what a client can know); :meth:`Selection.frames` resolves it against
a video's length and a task's clip. Errors are :class:`SelectionError` (a ``ValueError``).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = [
    "GRAMMAR",
    "MAX_FRAMES",
    "Selection",
    "SelectionError",
    "consecutive_frames",
    "parse_frame_list",
    "uniform_frames",
]

GRAMMAR = "auto, uniform[:N|:P%], consecutive[:N|:P%][@START] or indices like 0-7,12"
MAX_FRAMES = 100_000  # a frame list longer than this is refused before it is expanded


class SelectionError(ValueError):
    """A frame selection that is malformed, or that does not fit the video."""


def uniform_frames(num_frames: int, count: int = 8, seed: int = 0) -> list[int]:
    """``count`` frames at uniform intervals with a random phase ("randomly sample 8 frames with uniform
    intervals"); all frames when the video has fewer."""
    if num_frames <= count:
        return list(range(num_frames))
    gap = num_frames / count
    phase = random.Random(seed).random() * gap
    return [min(int(phase + i * gap), num_frames - 1) for i in range(count)]


def consecutive_frames(num_frames: int, count: int = 32, seed: int = 0) -> list[int]:
    """``count`` consecutive frames from a random start (action recognition)."""
    if num_frames < count:
        raise SelectionError(f"this task needs {count} consecutive frames but the video has {num_frames}; "
                             f"encode more frames (--frames) or pass a smaller clip length")
    start = random.Random(seed).randrange(num_frames - count + 1)
    return list(range(start, start + count))


def parse_frame_list(text: str, *, max_frames: int = MAX_FRAMES) -> list[int]:
    """``"0,1,2"``, ``"0-7"`` (inclusive) or a mix (``"0-3,8,10-11"``) -> frame indices, in the given order."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d{1,9})(?:\s*-\s*(\d{1,9}))?", part)
        if not m:
            raise SelectionError(f"invalid frame list {text!r}: use comma-separated indices and inclusive ranges, "
                                 "e.g. 0,1,2 or 0-7")
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo:
            raise SelectionError(f"invalid frame range {part!r}: the end is before the start")
        if len(out) + hi - lo + 1 > max_frames:
            raise SelectionError(f"too many frames in {text!r} (at most {max_frames})")
        out.extend(range(lo, hi + 1))
    return out


def _count(text: str | None, max_frames: int) -> int | None:
    if text is None:
        return None
    if int(text) > max_frames:
        raise SelectionError(f"too many frames: {int(text)} asked, at most {max_frames} per request")
    return int(text)


def _percent(text: str | None) -> float | None:
    if text is None:
        return None
    p = float(text)
    if not 0 < p <= 100:
        raise SelectionError(f"a percentage of the frames must be in (0, 100], got {text}%")
    return p


@dataclass(frozen=True)
class Selection:
    """A parsed frame selection (see the module docstring)."""

    kind: str  # "auto", "uniform", "consecutive" or "list"
    count: int | None = None  # uniform, consecutive: frames wanted (None: the task's clip length)
    start: int | None = None  # consecutive: the first frame (None: a seeded random start)
    indices: tuple[int, ...] = ()  # list: the frames, in order
    percent: float | None = None  # uniform, consecutive: N as a percentage of the video's frames

    @classmethod
    def parse(cls, text: str, *, max_frames: int = MAX_FRAMES) -> Selection:
        """Parse ``text`` (case and surrounding blanks ignored); ``max_frames`` bounds an explicit list and a
        count (``uniform:N``, ``consecutive:N``), before anything is expanded."""
        t = str(text).strip().lower()
        if t == "auto":
            return cls("auto")
        if m := re.fullmatch(r"uniform(?::(\d{1,6})|:(\d{1,3}(?:\.\d{1,3})?)%)?", t):
            return cls("uniform", _count(m[1], max_frames), percent=_percent(m[2]))
        if m := re.fullmatch(r"consecutive(?::(\d{1,6})|:(\d{1,3}(?:\.\d{1,3})?)%)?(?:@(\d{1,9}))?", t):
            return cls("consecutive", _count(m[1], max_frames), None if m[3] is None else int(m[3]),
                       percent=_percent(m[2]))
        return cls("list", indices=tuple(parse_frame_list(t, max_frames=max_frames)))

    def frames(self, num_frames: int, *, clip: int, consecutive: bool, seed: int = 0) -> list[int]:
        """The frame indices for a video of ``num_frames`` frames and a task reading ``clip`` frames, as consecutive
        clips (``consecutive``) or uniformly spread. Indices are not checked against ``num_frames``: an explicit list
        or a start is the caller's to check."""
        count = clip if self.count is None else self.count
        if self.percent is not None:
            count = max(1, round(num_frames * self.percent / 100))
        if self.kind == "auto":
            return consecutive_frames(num_frames, clip, seed) if consecutive else uniform_frames(num_frames, clip, seed)
        if self.kind == "uniform":
            return uniform_frames(num_frames, count, seed) if count else []
        if self.kind == "consecutive":
            if self.start is None:
                return consecutive_frames(num_frames, count, seed)
            return list(range(self.start, self.start + count))
        return list(self.indices)

    def __str__(self) -> str:
        if self.kind == "list":
            return ",".join(map(str, self.indices))
        text = self.kind + ("" if self.count is None else f":{self.count}")
        text += "" if self.percent is None else f":{self.percent:g}%"
        return text + ("" if self.start is None else f"@{self.start}")
