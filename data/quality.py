"""Is this photo usable? Cheap OpenCV measurements, with thresholds set on the training data.

The thresholds let at least 99.5% of the training photos through (measured on
every 10th HAM10000 image and all 541 clinical photos: the 0.5th percentiles
were sharpness 5.3 and skin fraction 0.10; the least colourful photo scored 25
on the colour measure below, a black-and-white one 0). A photo that fails one
gets a reason the user can act on.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.images import MIN_PHOTO_SIDE, analysis_copy

MIN_SHARPNESS = 4.0  # variance of the Laplacian on the analysis copy (256 px)
MAX_DARK = 0.60  # fraction of pixels with brightness < 40
MAX_BRIGHT = 0.50  # fraction of pixels with brightness > 250
MIN_SKIN = 0.10  # fraction of skin- or lesion-coloured pixels
# Each pixel's largest minus smallest channel, at the 99th percentile (a small face on a grey wall still has colour).
MIN_COLOUR = 4.0


@dataclass(frozen=True)
class PhotoStats:
    sharpness: float
    dark: float
    bright: float
    skin: float
    colour: float


def measure(image: np.ndarray, analysis: np.ndarray | None = None) -> PhotoStats:
    """`analysis`: the image's `data.images.analysis_copy`, if the caller already made it."""
    small = analysis_copy(image) if analysis is None else analysis
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    # Each pixel's largest channel (brightness) and its spread over the channels (colour); OpenCV's per-channel max
    # and min take microseconds where numpy's max over the last axis takes a millisecond, on every photo scored.
    r, g, b = cv2.split(small)
    value = cv2.max(cv2.max(r, g), b)
    spread = cv2.subtract(value, cv2.min(cv2.min(r, g), b))
    ycrcb = cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb)
    # Skin tones and red/brown lesions sit in a band of Cr (red difference) and Cb (blue difference).
    skin = cv2.inRange(ycrcb, (20, 130, 70), (255, 185, 135))
    return PhotoStats(
        sharpness=float(cv2.Laplacian(gray, cv2.CV_32F).var()),
        dark=float((value < 40).mean()),
        bright=float((value > 250).mean()),
        skin=float((skin > 0).mean()),
        colour=float(np.percentile(spread, 99)),
    )


def photo_problem(image: np.ndarray, analysis: np.ndarray | None = None) -> str | None:
    """A plain-words reason the photo cannot be judged, or None if it looks usable. A working copy
    (`data.images.working_copy`) is judged as the photo that was taken: it keeps a shorter side that is too small."""
    stats = measure(image, analysis)
    height, width = image.shape[:2]
    if min(width, height) < MIN_PHOTO_SIDE:
        return (f"too small ({width}x{height} pixels): send the photo as the camera took it, not a thumbnail or a "
                "crop, or take a closer photo of the spot")
    if stats.dark > MAX_DARK:
        return "too dark: take the photo in daylight or with more light"
    if stats.bright > MAX_BRIGHT:
        return "overexposed: avoid flash and direct glare, then retake"
    if stats.sharpness < MIN_SHARPNESS:
        return "blurred: hold the camera steady, let it focus on the spot and retake"
    if stats.colour < MIN_COLOUR:  # before the skin check, which a grey photo fails for want of colour
        return "black and white: take a colour photo (the colour tells a red spot from a brown one)"
    if stats.skin < MIN_SKIN:
        return "not a close-up of skin: photograph the spot close up, filling much of the picture"
    return None
