"""What the web page keeps in memory between one browser session's requests: the photo (never on disk), so that
its frame can be moved, and which photo was put in last."""
from __future__ import annotations

import threading
import weakref
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class HeldPhoto:
    """A photo kept in one browser session's memory (never on disk) so its frame can be moved."""

    upload: str  # the upload's path: Gradio names uploads by content, so the same path means the same photo
    photo: np.ndarray | None  # None once let go to keep within the memory budget (see HeldPhotos)
    box: tuple[int, int, int, int]
    placed: bool
    own_frame_label: str | None = None  # the answer for the frame SpotCheck placed itself (serve.app.check_frame)
    framable: bool = True  # False for a photo it cannot use (too small, dark, blurred...): no spot to frame in it


class HeldPhotos:
    """Every photo held in memory, across all browser sessions, kept within `budget` bytes: when a new one goes over,
    the longest-held are let go (their page then asks for the photo again). Gradio drops each after its time to live,
    but requests arriving faster than that (40 API calls with a 16-MP photo took the server to 2.3 GB) would
    otherwise fill the memory. Only weak references are kept here: a photo Gradio drops is gone."""

    def __init__(self, budget: int):
        self.budget = budget
        self._held: deque[weakref.ref[HeldPhoto]] = deque()
        self._lock = threading.Lock()

    def hold(self, held: HeldPhoto) -> HeldPhoto:
        with self._lock:
            self._held.append(weakref.ref(held))
            live = [h for h in (ref() for ref in self._held) if h is not None and h.photo is not None]
            self._held = deque(weakref.ref(h) for h in live)
            total = sum(h.photo.nbytes for h in live)  # a photo held twice (moments after a new answer) counts twice
            for oldest in live[:-1]:
                if total <= self.budget:
                    break
                total -= oldest.photo.nbytes
                oldest.photo = None
        return held


def held_pixels(held: HeldPhoto | None) -> np.ndarray | None:
    """The photo `held` keeps, or None once let go. Read it once per request and use what this returns: another
    session's `HeldPhotos.hold` may let the photo go, from another thread, at any moment."""
    return None if held is None else held.photo


@dataclass
class LatestPhoto:
    """The photo last put into one browser page: its upload's path, None once the photo box is emptied.

    An answer whose photo was replaced, before or while it was being checked, is dropped, not shown next to the new
    photo.
    """

    upload: str | None = None
    replaced: set[str] = field(default_factory=set)  # the uploads put in before it, in this page
