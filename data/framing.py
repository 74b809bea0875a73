"""Find the spot in a photo and frame it the way the training images are framed.

Dermoscopic training images show the lesion centred and filling much of the
frame; a phone photo shows a small spot in a wide field of skin. `frame_spot`
looks for regions that differ from the surrounding skin in colour (CIE Lab
distance from the median skin colour), keeps compact blobs away from the image
edge (rulers, caption bars and pen circles are thin, or touch the edge), and
returns a square box around the most prominent one. If nothing stands out, or
the spot already fills the frame, the whole image is used. The web page lets a
person move and resize the frame (`box_around`) when the wrong spot was picked.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.images import ANALYSIS_SIDE, analysis_copy

CONTEXT = 2.0  # box side = CONTEXT x the spot's larger side, like a dermoscopic frame
# Ignore blobs smaller than this fraction of the image: a spot down to about 3% of a photo's height is still found
# (the 5 x 5 opening below removes smaller specks; 0.002 lost spots under 6%: bench/README.md, "A small spot").
MIN_AREA = 0.0004
RIVAL = 1 / 3  # other blobs count as spots in the note when they score at least this share of the best
FILLS_FRAME = 0.25  # a spot this large (fraction of image) is already framed
MIN_SIDE = 32.0  # the smallest frame, in pixels


@dataclass(frozen=True)
class Framing:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image
    spots: int  # how many candidate spots were seen
    found: bool  # False: nothing stood out, the whole image is used
    by_user: bool = False  # the person placed the frame themselves

    def note(self) -> str:
        if self.by_user:
            return "Checked the frame you placed."
        if not self.found:
            return "No distinct spot found: the whole photo was used."
        if self.spots > 1:
            return f"{self.spots} spots seen: the most prominent one was checked."
        return "The spot was found and framed."


def _blob_score(mask: np.ndarray, distance: np.ndarray) -> list[tuple[float, tuple[int, int, int, int]]]:
    h, w = mask.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    blobs = []
    for i in range(1, count):
        x, y, bw, bh, area = stats[i]
        if area < MIN_AREA * h * w:
            continue
        solidity = area / float(bw * bh)  # rings, lines and frames are low
        if solidity < 0.3:
            continue
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        contrast = float(distance[labels == i].mean())
        cy, cx = y + bh / 2, x + bw / 2
        centrality = 1.0 - 0.5 * (abs(cx / w - 0.5) + abs(cy / h - 0.5))
        score = contrast * np.sqrt(area) * solidity * centrality * (0.3 if touches else 1.0)
        blobs.append((score, (x, y, x + bw, y + bh)))
    return sorted(blobs, reverse=True)


def _rivals(blobs: list[tuple[float, tuple[int, int, int, int]]]) -> int:
    """How many spots to mention: the chosen one and those nearly as prominent, not every freckle or pore."""
    return sum(score >= RIVAL * blobs[0][0] for score, _ in blobs)


def frame_spot(image: np.ndarray, analysis: np.ndarray | None = None) -> Framing:
    """Locate the most prominent spot in an RGB uint8 image and return a square box around it.

    `analysis`: the image's `data.images.analysis_copy`, if the caller already made it.
    """
    h, w = image.shape[:2]
    whole = Framing((0, 0, w, h), 0, False)
    scale = ANALYSIS_SIDE / max(h, w)
    small = cv2.GaussianBlur(analysis_copy(image) if analysis is None else analysis, (5, 5), 0)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    skin = np.median(lab.reshape(-1, 3), axis=0)
    # Lightness counts less than colour: shadows and glare change L, spots change a and b.
    distance = np.sqrt(((lab - skin) ** 2 * np.array([0.5, 1.0, 1.0], np.float32)).sum(axis=2))
    distance8 = cv2.normalize(distance, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    threshold, mask = cv2.threshold(distance8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if distance.max() < 12:  # nothing differs from the background in a visible way
        return whole
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    blobs = _blob_score(mask, distance)
    if not blobs:
        return whole
    x0, y0, x1, y1 = (v / scale for v in blobs[0][1])
    spot_side = max(x1 - x0, y1 - y0)
    if (x1 - x0) * (y1 - y0) > FILLS_FRAME * w * h:
        return Framing((0, 0, w, h), _rivals(blobs), True)
    box = box_around(((x0 + x1) / 2, (y0 + y1) / 2), spot_side * CONTEXT, (h, w))
    return Framing(box, _rivals(blobs), True)


def box_around(centre: tuple[float, float], side: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A square box of about `side` pixels centred on (x, y), moved and shrunk to fit inside an image of `shape`."""
    h, w = shape[:2]
    side = min(max(side, min(MIN_SIDE, h, w)), float(min(h, w)))
    cx, cy = centre
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    side_px = int(round(side))
    return left, top, left + side_px, top + side_px


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]
