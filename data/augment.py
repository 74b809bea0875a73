"""The training augmentations `data.presets.TrainPreset` draws from: geometry and colour, a dermoscopic image
zoomed out onto skin, a dermoscopic image made to look like an ordinary photo, and the marks (pen circles, writing,
rulers, caption bars) that some sources carry on one class only. Each takes a uint8 RGB image and a numpy random
generator, and returns a new image.
"""
from __future__ import annotations

import cv2
import numpy as np


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


def zoom_out(image: np.ndarray, rng: np.random.Generator, *, scale: float | None = None) -> np.ndarray:
    """Shrink a frame-filling dermoscopic crop onto a wider surround of skin, as a framed phone photo shows a spot.

    The crop is scaled to `scale` of the side (default: 45-85% at random), its
    corners (where a dermoscope's field often goes dark) faded out with a soft
    oval, and laid on skin of the crop's own skin colour (the median of its
    border, leaving out a dermoscope's near-black vignette) with soft uneven
    shading and fine grain, so there is no seam or frame for the network to learn.
    """
    h, w = image.shape[:2]
    scale = rng.uniform(0.45, 0.85) if scale is None else scale
    sw, sh = max(4, round(w * scale)), max(4, round(h * scale))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    border = np.concatenate([image[:h // 10].reshape(-1, 3), image[-(h // 10):].reshape(-1, 3),
                             image[:, :w // 10].reshape(-1, 3), image[:, -(w // 10):].reshape(-1, 3)]).astype(np.float32)
    brightness = border.sum(axis=1)
    skin = np.median(border[brightness >= 0.5 * np.percentile(brightness, 95)], axis=0) * rng.uniform(0.95, 1.05, 3)
    shading = cv2.resize(rng.normal(0, 1, (4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    canvas = skin * (1 + rng.uniform(0.01, 0.04) * shading) + rng.normal(0, rng.uniform(1, 4), (h, w, 3))
    mask = np.zeros((sh, sw), np.float32)
    cv2.ellipse(mask, (sw // 2, sh // 2), (int(sw * 0.42), int(sh * 0.42)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, sw * 0.06))[..., None]
    x0 = int(np.clip((w - sw) / 2 + rng.uniform(-0.1, 0.1) * w, 0, w - sw))
    y0 = int(np.clip((h - sh) / 2 + rng.uniform(-0.1, 0.1) * h, 0, h - sh))
    window = canvas[y0:y0 + sh, x0:x0 + sw]
    canvas[y0:y0 + sh, x0:x0 + sw] = small * mask + window * (1 - mask)
    return np.clip(canvas, 0, 255).astype(np.uint8)


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


# Felt-tip inks (RGB): blue, black, brown, purple, green.
INKS = ((40, 60, 150), (35, 35, 40), (75, 50, 35), (95, 45, 115), (30, 95, 70))


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    base = np.asarray(INKS[rng.integers(len(INKS))]) + rng.integers(-15, 16, 3)
    return tuple(int(v) for v in np.clip(base, 0, 255))


def pen_circle(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An ink ring (sometimes open) drawn around the middle, where the spot is, as on the NCI atlas nevi."""
    out, (h, w) = image.copy(), image.shape[:2]
    centre = (int(w * rng.uniform(0.4, 0.6)), int(h * rng.uniform(0.4, 0.6)))
    axes = (int(w * rng.uniform(0.22, 0.45)), int(h * rng.uniform(0.22, 0.45)))
    start = rng.uniform(0, 60) if rng.random() < 0.5 else 0.0
    cv2.ellipse(out, centre, axes, rng.uniform(0, 180), start, 360 - start, _ink(rng),
                int(rng.integers(1, 4)), cv2.LINE_AA)
    return out


def ink_writing(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A handwritten-looking case number, letter or arrow near an edge."""
    out, (h, w) = image.copy(), image.shape[:2]
    colour, thickness = _ink(rng), int(rng.integers(1, 3))
    x, y = int(w * rng.uniform(0.02, 0.7)), int(h * rng.choice([rng.uniform(0.15, 0.3), rng.uniform(0.75, 0.95)]))
    if rng.random() < 0.25:
        tip = (int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7)))
        cv2.arrowedLine(out, (x, y), tip, colour, thickness + 1, cv2.LINE_AA, tipLength=0.3)
    else:
        text = "".join(rng.choice(list("0123456789AB"), size=int(rng.integers(1, 4))))
        font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)[int(rng.integers(2))]
        cv2.putText(out, text, (x, y), font, rng.uniform(0.4, 1.1) * h / 112, colour, thickness, cv2.LINE_AA)
    return out


def ruler(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A measuring scale along the bottom or left edge: a pale strip (or bare skin) with ticks, every fifth longer."""
    turned = rng.random() < 0.5  # draw along the bottom of the image turned a quarter, so the scale ends up on the left
    out = (np.rot90(image, 1) if turned else image).copy()
    h, w = out.shape[:2]
    depth, step = int(h * rng.uniform(0.08, 0.16)), max(3, int(w * rng.uniform(0.03, 0.06)))
    if rng.random() < 0.7:
        out[h - depth:] = np.clip(rng.integers(200, 256) + rng.integers(-10, 11, 3), 0, 255)
    tick = (20, 20, 25) if rng.random() < 0.8 else _ink(rng)
    for i, x in enumerate(range(int(rng.integers(0, step)), w, step)):
        cv2.line(out, (x, h - 1), (x, h - 1 - (depth if i % 5 == 0 else depth // 2)), tick, 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.rot90(out, -1)) if turned else out


def caption_bar(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey band with small print along the bottom, as on many SD-198 photos."""
    out, (h, w) = image.copy(), image.shape[:2]
    depth = max(3, int(h * rng.uniform(0.04, 0.12)))
    out[h - depth:] = np.clip(rng.integers(150, 220) + rng.integers(-6, 7, 3), 0, 255)
    text = "".join(rng.choice(list("abcdefghiklmnopqrstuvwxyz .:"), size=int(rng.integers(6, 20))))
    shade = int(rng.choice([245, 60]))
    cv2.putText(out, text, (int(w * rng.uniform(0, 0.3)), h - max(1, depth // 4)), cv2.FONT_HERSHEY_SIMPLEX,
                depth / 30, (shade, shade, shade), 1, cv2.LINE_AA)
    return out


MARKS = {"pen circle": pen_circle, "ink writing": ink_writing, "ruler": ruler, "caption bar": caption_bar}


def add_marks(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or two of `MARKS`, drawn on any class alike.

    In the clinical photos these marks go with one class (pen circles, case
    numbers and rulers with the NCI nevi; caption bars with SD-198's vascular
    and other photos), so a network can learn the mark instead of the spot.
    Drawn on every class, they tell it nothing.
    """
    for name in rng.choice(list(MARKS), size=int(rng.integers(1, 3)), replace=False):
        image = MARKS[name](image, rng)
    return image
