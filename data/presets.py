"""Image presets: the one eval preprocessing and the training augmentation, side by side (the augmentations
themselves are in `data.augment`).

`eval_preset` is the one way a photo becomes model input: `training.evaluate`,
batch scoring and the app (through `model.predictor`, with the `EvalSettings`
stored in the checkpoint, for PyTorch and ONNX Runtime alike) all call it, so
they never drift apart. Training validates with its two halves, `frame_and_resize`
once per image when the data is decoded (on the photo's `data.images.working_copy`,
as the predictor frames it) and `normalize_as` per batch, with the very settings
it then stores; `TrainPreset` ends in `normalize_as` with those settings too. It
returns numpy (no torch) so the ONNX Runtime path needs no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data.augment import add_marks, clinicalize, random_colour, random_geometry, zoom_out
from data.framing import Framing, crop, frame_spot

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class EvalSettings:
    """How a model wants a photo prepared (`eval_preset`): training writes them into the checkpoint's "preprocess",
    and the predictor and fine-tuning read them back from there, never from defaults of their own."""

    size: int = 112  # the network's input side in pixels
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    colour_constancy: int = 0  # shades-of-grey norm p (`shades_of_grey`); 0: off
    flatten_lightness: bool = False  # frame with the lightness gradient taken out (data.framing)

    @classmethod
    def from_checkpoint(cls, preprocess: dict) -> "EvalSettings":
        """From a checkpoint's "preprocess"; a setting added after it was written is off, as it was then."""
        return cls(size=int(preprocess["size"]), mean=tuple(preprocess["mean"]), std=tuple(preprocess["std"]),
                   colour_constancy=int(preprocess.get("colour_constancy", 0)),
                   flatten_lightness=bool(preprocess.get("flatten_lightness", False)))

    def to_checkpoint(self) -> dict:
        """The checkpoint's "preprocess", naming the framing too (`data.framing.frame_spot`)."""
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std),
                "colour_constancy": self.colour_constancy, "framing": "data.framing.frame_spot",
                "flatten_lightness": self.flatten_lightness}


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
                     analysis: np.ndarray | None = None, flatten_lightness: bool = False) -> tuple[np.ndarray, Framing]:
    """Frame the spot (see data.framing), or use the `box` a person placed, and bring it to size x size uint8 RGB."""
    framing = (frame_spot(image, analysis, flatten_lightness=flatten_lightness) if box is None
               else Framing(box, spots=1, found=True, by_user=True))
    return square_resize(crop(image, framing.box), size), framing


def shades_of_grey(image: np.ndarray, p: int) -> np.ndarray:
    """Colour constancy (Finlayson & Trezzi 2004): estimate the light's colour as each channel's Minkowski
    p-norm and rescale the channels so that it becomes neutral grey (float32 HWC, 0..255)."""
    x = image.astype(np.float32)
    light = np.power(np.mean(np.power(x, p), axis=(0, 1)), 1.0 / p)
    return np.clip(x * (light.mean() / np.maximum(light, 1e-3)), 0, 255)


def eval_preset(image: np.ndarray, settings: EvalSettings, *,
                box: tuple[int, int, int, int] | None = None,
                analysis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Framing]:
    """RGB uint8 photo -> (model input CHW float32, the framed square uint8, the framing), prepared as `settings`
    (the model's, from its checkpoint) say.

    `box` (x0, y0, x1, y1) replaces the automatic framing, e.g. when a person moved the frame;
    `analysis` is the photo's `data.images.analysis_copy`, if the caller already made it.
    """
    square, framing = frame_and_resize(image, size=settings.size, box=box, analysis=analysis,
                                       flatten_lightness=settings.flatten_lightness)
    return normalize_as(square, settings), square, framing


def normalize_as(square: np.ndarray, settings: EvalSettings) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, normalised as a model's `settings` say: the second half of `eval_preset`, for
    squares framed already, and the end of `TrainPreset`. A `colour_constancy` p > 0 first neutralises the light's
    colour with `shades_of_grey` (0: off)."""
    p = settings.colour_constancy
    x = (shades_of_grey(square, p) if p else square.astype(np.float32)) / 255.0
    x = (x - np.asarray(settings.mean, np.float32)) / np.asarray(settings.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class TrainPreset:
    """Random augmentation of a framed uint8 crop, ending in `normalize_as` with the model's `settings`, the very
    ones validation and prediction use (`eval_preset`), so that the two cannot normalise differently.

    Geometry (any rotation, flips, mild zoom) and colour changes that keep red
    red: hue moves at most a few degrees, because colour is what tells a
    cherry angioma from a brown mole. With probability `zoom_out_p` a
    dermoscopic image, which fills its frame, is shrunk onto a wider surround of
    skin, as a framed phone photo shows a spot (see `zoom_out`). With
    probability `marks_p` (clinical photos) or `marks_p_dermoscopy` the image
    gets the marks that some sources carry on one class only (see `add_marks`),
    and with probability `clinical_p` it is made to look like an ordinary photo
    rather than dermoscopy (see `clinicalize`).
    """

    def __init__(self, *, settings: EvalSettings = EvalSettings(), clinical_p: float = 0.5, marks_p: float = 0.0,
                 marks_p_dermoscopy: float = 0.0, zoom_out_p: float = 0.0):
        self.settings, self.clinical_p = settings, clinical_p
        self.marks_p, self.marks_p_dermoscopy, self.zoom_out_p = marks_p, marks_p_dermoscopy, zoom_out_p

    def __call__(self, image: np.ndarray, rng: np.random.Generator, *, clinical: bool = False) -> np.ndarray:
        """`clinical`: the image is an ordinary clinical photo rather than dermoscopy."""
        zoom_out_p = 0.0 if clinical else self.zoom_out_p
        marks_p = self.marks_p if clinical else self.marks_p_dermoscopy
        image = random_geometry(image, rng, self.settings.size)
        if zoom_out_p and rng.random() < zoom_out_p:  # no draw at 0, as for the marks below
            image = zoom_out(image, rng)
        image = random_colour(image, rng)
        if marks_p and rng.random() < marks_p:  # no draw at 0: older recipes replay exactly
            image = add_marks(image, rng)
        if rng.random() < self.clinical_p:
            image = clinicalize(image, rng)
        return normalize_as(image, self.settings)
