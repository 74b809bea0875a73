"""Image presets: the one eval preprocessing and the training augmentation, side by side.

`eval_preset` is the only way an image becomes model input: training's
validation, `training.evaluate`, batch scoring, the app and the ONNX export all
call it with the settings stored in the checkpoint, so they never drift apart.
It returns numpy (no torch) so the ONNX Runtime path can use it too.
"""
from __future__ import annotations

import cv2
import numpy as np

from data.framing import Framing, crop, frame_spot

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to `size` and centre-crop to size x size (uint8 RGB)."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interpolation)
    top, left = (nh - size) // 2, (nw - size) // 2
    return resized[top : top + size, left : left + size]


def frame_and_resize(image: np.ndarray, *, size: int, box: tuple[int, int, int, int] | None = None,
                     analysis: np.ndarray | None = None) -> tuple[np.ndarray, Framing]:
    """Frame the spot (see data.framing), or use the `box` a person placed, and bring it to size x size uint8 RGB."""
    framing = frame_spot(image, analysis) if box is None else Framing(box, spots=1, found=True, by_user=True)
    return square_resize(crop(image, framing.box), size), framing


def shades_of_grey(image: np.ndarray, p: int) -> np.ndarray:
    """Colour constancy (Finlayson & Trezzi 2004): estimate the light's colour as each channel's Minkowski
    p-norm and rescale the channels so that it becomes neutral grey (float32 HWC, 0..255)."""
    x = image.astype(np.float32)
    light = np.power(np.mean(np.power(x, p), axis=(0, 1)), 1.0 / p)
    return np.clip(x * (light.mean() / np.maximum(light, 1e-3)), 0, 255)


def normalize(square: np.ndarray, *, mean=MEAN, std=STD, colour_constancy: int = 0) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, normalised; `colour_constancy` p > 0 first neutralises the light's colour
    with `shades_of_grey` (0: off)."""
    x = (shades_of_grey(square, colour_constancy) if colour_constancy else square.astype(np.float32)) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def eval_preset(image: np.ndarray, *, size: int = 112, mean=MEAN, std=STD, colour_constancy: int = 0,
                box: tuple[int, int, int, int] | None = None,
                analysis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Framing]:
    """RGB uint8 photo -> (model input CHW float32, the framed square uint8, the framing).

    `box` (x0, y0, x1, y1) replaces the automatic framing, e.g. when a person moved the frame;
    `analysis` is the photo's `data.images.analysis_copy`, if the caller already made it.
    """
    square, framing = frame_and_resize(image, size=size, box=box, analysis=analysis)
    return normalize(square, mean=mean, std=std, colour_constancy=colour_constancy), square, framing


class TrainPreset:
    """Random augmentation of a framed uint8 crop, ending in `normalize`.

    Geometry (any rotation, flips, mild zoom) and colour changes that keep red
    red: hue moves at most a few degrees, because colour is what tells a
    cherry angioma from a brown mole. With probability `clinical_p` the image
    is also made to look like an ordinary photo rather than dermoscopy (see
    `clinicalize`).
    """

    def __init__(self, *, size: int = 112, mean=MEAN, std=STD, clinical_p: float = 0.5, colour_constancy: int = 0):
        self.size, self.mean, self.std, self.clinical_p = size, mean, std, clinical_p
        self.colour_constancy = colour_constancy

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = random_geometry(image, rng, self.size)
        image = random_colour(image, rng)
        if rng.random() < self.clinical_p:
            image = clinicalize(image, rng)
        return normalize(image, mean=self.mean, std=self.std, colour_constancy=self.colour_constancy)


def random_geometry(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    angle = rng.uniform(0, 360)
    zoom = rng.uniform(0.85, 1.25) * size / min(h, w)
    shift = rng.uniform(-0.08, 0.08, 2) * size
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    matrix[:, 2] += (size / 2 - w / 2 + shift[0], size / 2 - h / 2 + shift[1])
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out[:, ::-1] if rng.random() < 0.5 else out


def random_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-2, 2)) % 180  # OpenCV hue is 0..180: +-4 degrees
    hsv[..., 1] *= rng.uniform(0.75, 1.25)
    hsv[..., 2] *= rng.uniform(0.75, 1.25)
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.8, 1.2) + mean  # contrast
    return np.clip(out, 0, 255).astype(np.uint8)


def clinicalize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make a dermoscopic crop look like a phone close-up.

    Each step is applied at random: white-balance cast, a lighting gradient,
    hair strands, a glare spot, softness (downscale and blur), sensor noise and
    JPEG compression.
    """
    h, w = image.shape[:2]
    out = image.astype(np.float32)
    if rng.random() < 0.7:  # white balance: warm indoor light to cool daylight
        out *= rng.uniform(0.85, 1.15, 3).astype(np.float32)
    if rng.random() < 0.5:  # uneven lighting across the frame
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-6
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = ((xx / w - 0.5) * direction[0] + (yy / h - 0.5) * direction[1])
        out *= (1 + rng.uniform(0.2, 0.6) * ramp)[..., None]
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:  # hair strands
        for _ in range(rng.integers(1, 6)):
            p0 = tuple(int(v) for v in rng.integers(0, [w, h]))
            p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
            shade = int(rng.integers(20, 90))
            cv2.line(out, p0, p1, (shade, shade - 10 if shade > 10 else 0, 0), int(rng.integers(1, 3)), cv2.LINE_AA)
    if rng.random() < 0.2:  # specular glare
        glare = np.zeros((h, w), np.float32)
        centre = tuple(int(v) for v in rng.integers(0, [w, h]))
        cv2.circle(glare, centre, int(rng.integers(3, max(4, w // 8))), 1.0, -1)
        glare = cv2.GaussianBlur(glare, (0, 0), 3)[..., None]
        out = (out * (1 - glare) + 255 * glare).astype(np.uint8)
    if rng.random() < 0.6:  # a softer, lower-resolution camera
        factor = rng.uniform(0.3, 0.8)
        small = cv2.resize(out, (max(8, int(w * factor)), max(8, int(h * factor))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:  # sensor noise
        noise = rng.normal(0, rng.uniform(2, 8), out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # JPEG artefacts
        ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        if ok:
            out = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return out
