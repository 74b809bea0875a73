"""Finding the spot in a photo, and refusing photos that cannot be judged."""
from __future__ import annotations

import cv2
import numpy as np

from data.framing import frame_spot
from data.quality import photo_problem
from tests.conftest import spot_photo


def test_framing_finds_an_off_centre_spot():
    image = spot_photo("nevus", size=400, radius=15, centre=(300, 100))
    framing = frame_spot(image)
    x0, y0, x1, y1 = framing.box
    assert framing.found and x0 < 300 < x1 and y0 < 100 < y1
    assert (x1 - x0) < 200  # a close crop, not the whole photo


def test_framing_picks_the_most_prominent_of_several():
    image = spot_photo("nevus", size=400, radius=25, centre=(100, 300))
    cv2.circle(image, (300, 100), 14, (90, 55, 35), -1)
    framing = frame_spot(image)
    x0, y0, x1, y1 = framing.box
    assert framing.spots == 2 and x0 < 100 < x1 and y0 < 300 < y1
    assert "2 spots" in framing.note()


def test_plain_skin_uses_the_whole_photo():
    image = np.full((200, 300, 3), (220, 180, 160), np.uint8)
    framing = frame_spot(image)
    assert not framing.found and framing.box == (0, 0, 300, 200)


def test_photo_problems_have_reasons():
    good = spot_photo("vascular", size=200)
    assert photo_problem(good) is None
    assert "too small" in photo_problem(good[:20, :20])
    assert "too dark" in photo_problem((good * 0.1).astype(np.uint8))
    assert "overexposed" in photo_problem(np.full((200, 200, 3), 255, np.uint8))
    assert "blurred" in photo_problem(cv2.GaussianBlur(good, (0, 0), 12))
    page = np.full((200, 200, 3), 245, np.uint8)
    for row in range(20, 180, 16):
        cv2.putText(page, "lorem ipsum dolor", (5, row), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    assert "not a close-up of skin" in photo_problem(page)


def wide_photo(spot_diameter: int, *, seed: int = 0) -> np.ndarray:
    """A 2000 x 1500 photo of even, slightly grainy skin with one small red spot off centre at (1100, 700)."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal((205, 160, 140), 4, (1500, 2000, 3)), 0, 255).astype(np.uint8)
    cv2.circle(image, (1100, 700), spot_diameter // 2, (170, 30, 45), -1, cv2.LINE_AA)
    return image


def test_a_small_spot_in_a_wide_photo_is_found_and_framed():
    """A 3-mm cherry angioma photographed from a step back: 3.5% of the photo's height, still 52 pixels wide."""
    framing = frame_spot(wide_photo(52))
    x0, y0, x1, y1 = framing.box
    assert framing.found and x0 < 1100 < x1 and y0 < 700 < y1
    assert 80 < x1 - x0 < 160  # about twice the spot, as a dermoscopic frame shows it


def test_freckles_beside_the_spot_are_not_counted_as_spots():
    image = wide_photo(120)
    for x in range(200, 1800, 300):  # six small freckles, well apart: each big enough to be a candidate
        cv2.circle(image, (x, 1300), 30, (150, 100, 80), -1)
    framing = frame_spot(image)
    x0, y0, x1, y1 = framing.box
    assert x0 < 1100 < x1 and y0 < 700 < y1
    assert framing.spots == 1 and framing.note() == "The spot was found and framed."
