"""Find the spot in a photo and frame it the way the training images are framed.

Dermoscopic training images show the lesion centred and filling much of the
frame; a phone photo shows a small spot in a wide field of skin. `frame_spot`
looks for regions that differ from the surrounding skin in colour (CIE Lab
distance from the median skin colour), keeps compact blobs away from the image
edge (rulers, caption bars and pen circles are thin, or touch the edge), and
returns a square box around the most prominent one. If the spot already fills
much of the photo, the box is the largest square around it; if nothing stands
out, the middle square of the photo (the network sees a square: a box of the
whole photo would be cut to its middle anyway, unsaid). On the web page a
person can tap the right spot (`spot_at`) or move and resize the frame
(`box_around`) when the wrong one was picked. With `flatten_lightness` the
photo's broad lightness gradient is taken out first, so that the bright or dark
half of a side-lit photo does not stand out as the spot; a checkpoint trained
that way stores the setting, and `model.predictor` frames as it was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from data.images import ANALYSIS_SIDE, analysis_copy

CONTEXT = 2.0  # box side = CONTEXT x the spot's larger side, like a dermoscopic frame
# Ignore blobs smaller than this fraction of the image: a spot down to about 3% of a photo's height is still found
# (the 5 x 5 opening below removes smaller specks; 0.002 lost spots under 6%: bench/README.md, "A small spot").
MIN_AREA = 0.0004
RIVAL = 1 / 3  # other blobs count as spots in the note when they score at least this share of the best
FILLS_FRAME = 0.25  # a spot this large (fraction of image) is already framed
MIN_FRAME_SIDE = 32.0  # the smallest frame, in pixels
TAP_WINDOWS = (1.0, 0.5, 0.25)  # where `spot_at` looks around a tap: shares of the photo's shorter side
TAP_REACH = 0.03  # how far from a spot a tap may land and still mean it: a share of the window's side
# A tapped spot must differ from the skin around it by this much (mean CIE Lab distance): 99% of the spots framed
# in the clinical photos do (HAM10000: 98%); texture and shading on plain skin stay around 10.
TAP_CONTRAST = 15.0


@dataclass(frozen=True)
class Framing:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image
    spots: int  # how many candidate spots were seen
    found: bool  # False: nothing stood out, the middle of the photo is used
    by_user: bool = False  # the person placed the frame themselves

    def note(self, *, unlike_training: bool = False) -> str:
        """What to tell the person about the frame. `unlike_training`: the photo was found unlike the training
        photos, so it may show no spot at all (a page of text, a wall): the frame is not said to be on one."""
        if self.by_user:
            return "Checked the frame you placed."
        if not self.found:
            return ("No distinct spot found: the middle of the photo was checked. If your spot is elsewhere, tap it in "
                    "the picture of the frame checked, or retake the photo with the spot in the middle.")
        if self.spots > 1:
            return (f"{self.spots} spots seen: the most prominent one was checked. If it is not yours, tap yours in the "
                    "picture of the frame checked.")
        if unlike_training:
            return "If the frame missed your spot, tap your spot in the picture of the frame checked."
        return "The spot was found and framed."


class Blob(NamedTuple):
    score: float  # how prominent: contrast, size, solidity, how central, away from the edge
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the analysed copy's pixels
    contrast: float  # mean colour distance from the skin


def _blob_score(mask: np.ndarray, distance: np.ndarray) -> list[Blob]:
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
        blobs.append(Blob(score, (x, y, x + bw, y + bh), contrast))
    return sorted(blobs, reverse=True)


def _rivals(blobs: list[Blob]) -> int:
    """How many spots to mention: the chosen one and those nearly as prominent, not every freckle or pore."""
    return sum(blob.score >= RIVAL * blobs[0].score for blob in blobs)


def _blobs(small_rgb: np.ndarray, flatten_lightness: bool) -> list[Blob]:
    """Candidate spots in an analysis-sized RGB copy, best first."""
    lab = cv2.cvtColor(cv2.GaussianBlur(small_rgb, (5, 5), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    if flatten_lightness:  # lightness relative to a wide neighbourhood (sigma: a quarter of the side)
        lab[..., 0] -= cv2.GaussianBlur(lab[..., 0], (0, 0), max(small_rgb.shape[:2]) / 4)
    skin = np.median(lab.reshape(-1, 3), axis=0)
    # Lightness counts less than colour: shadows and glare change L, spots change a and b.
    distance = np.sqrt(((lab - skin) ** 2 * np.array([0.5, 1.0, 1.0], np.float32)).sum(axis=2))
    if distance.max() < 12:  # nothing differs from the background in a visible way
        return []
    distance8 = cv2.normalize(distance, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    _, mask = cv2.threshold(distance8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return _blob_score(mask, distance)


def frame_spot(image: np.ndarray, analysis: np.ndarray | None = None, *, flatten_lightness: bool = False) -> Framing:
    """Locate the most prominent spot in an RGB uint8 image and return a square box around it.

    `analysis`: the image's `data.images.analysis_copy`, if the caller already made it.
    """
    h, w = image.shape[:2]
    scale = ANALYSIS_SIDE / max(h, w)
    blobs = _blobs(analysis_copy(image) if analysis is None else analysis, flatten_lightness)
    if not blobs:
        return Framing(box_around((w / 2, h / 2), min(h, w), (h, w)), 0, False)
    x0, y0, x1, y1 = (v / scale for v in blobs[0].box)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    if (x1 - x0) * (y1 - y0) > FILLS_FRAME * w * h:  # already framed: the largest square, around the spot
        return Framing(box_around(centre, min(h, w), (h, w)), _rivals(blobs), True)
    return Framing(box_around(centre, max(x1 - x0, y1 - y0) * CONTEXT, (h, w)), _rivals(blobs), True)


def spot_at(image: np.ndarray, point: tuple[float, float], *,
            flatten_lightness: bool = False) -> tuple[int, int, int, int] | None:
    """The frame around the spot under `point` (x, y), framed as `frame_spot` frames; None if no spot is there.

    For a tap on the web page. The spot is looked for in the whole photo first, then, if none of the blobs seen
    there lies under the tap, in a window around it (half, then a quarter of the photo's shorter side), where the
    rest of the photo (uneven lighting, a brighter half, other spots) no longer decides what stands out. A blob
    counts when the tap lands on it, give or take a finger's width, and it stands out from the skin
    (TAP_CONTRAST); in a window it must also lie inside, not run over the window's edge.
    """
    h, w = image.shape[:2]
    for share in TAP_WINDOWS:
        window = box_around(point, share * min(h, w), (h, w)) if share < 1 else (0, 0, w, h)
        wx0, wy0, wx1, wy1 = window
        small = analysis_copy(crop(image, window))
        sh, sw = small.shape[:2]
        scale = sw / (wx1 - wx0)
        tap = ((point[0] - wx0) * scale, (point[1] - wy0) * scale)
        reach = TAP_REACH * max(sh, sw)
        for blob in _blobs(small, flatten_lightness):
            x0, y0, x1, y1 = blob.box
            under = x0 - reach <= tap[0] <= x1 + reach and y0 - reach <= tap[1] <= y1 + reach
            inside = share == 1 or (x0 > 0 and y0 > 0 and x1 < sw and y1 < sh)
            fills = (x1 - x0) * (y1 - y0) > FILLS_FRAME * sh * sw
            if under and inside and blob.contrast >= TAP_CONTRAST and not (fills and share < 1):
                centre = (wx0 + (x0 + x1) / 2 / scale, wy0 + (y0 + y1) / 2 / scale)
                if fills:  # the spot fills the photo: frame all it can, around the spot (not the tap)
                    return box_around(centre, min(h, w), (h, w))
                return box_around(centre, max(x1 - x0, y1 - y0) / scale * CONTEXT, (h, w))
    return None


def box_around(centre: tuple[float, float], side: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A square box of about `side` pixels centred on (x, y), moved and shrunk to fit inside an image of `shape`."""
    h, w = shape[:2]
    side = min(max(side, min(MIN_FRAME_SIDE, h, w)), float(min(h, w)))
    cx, cy = centre
    side_px = int(round(side))
    # Rounded apart, `left` and `side_px` can each round up (a side of 33.5 px): the box must still end inside.
    left = min(int(round(min(max(cx - side / 2, 0), w - side))), w - side_px)
    top = min(int(round(min(max(cy - side / 2, 0), h - side))), h - side_px)
    return left, top, left + side_px, top + side_px


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]
