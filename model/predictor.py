"""From a photo to an answer: the one code path the app, batch scoring and evaluation share.

    predictor = Predictor()                       # the embedded default model
    result = predictor.predict_file("spot.jpg")   # or .predict(rgb_array)
    result.label, result.reason, result.probabilities

`prepare` (checks + framing + eval preset, numpy only) and `classify` (the
network on a batch) are separate so batch scoring can decode in parallel
threads and run the network on whole batches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from data.framing import Framing
from data.images import read_image
from data.presets import eval_preset
from data.quality import photo_problem
from model.checkpoint import CheckpointError, load_checkpoint
from model.decision import UNSURE, Calibration, decide, energy, softmax
from model.net import SpotNet


@dataclass
class Prepared:
    """A photo checked, framed and turned into model input."""

    input: np.ndarray  # (3, size, size) float32
    square: np.ndarray  # the framed spot, (size, size, 3) uint8 RGB
    framing: Framing
    problem: str | None  # why the photo cannot be judged, if it cannot


@dataclass
class Prediction:
    label: str  # vascular | nevus | other | unsure
    reason: str  # in plain words: why this answer
    probabilities: dict[str, float]  # calibrated
    confidence: float  # the top probability
    heatmap: np.ndarray = field(repr=False)  # (size, size) in [0, 1]: where the model looked
    square: np.ndarray = field(repr=False)  # the framed spot the model saw
    framing: Framing | None = None


class Predictor:
    def __init__(self, checkpoint: str | os.PathLike | None = None, *, threads: int | None = None):
        ckpt = load_checkpoint(checkpoint)
        self.classes = tuple(ckpt["classes"])
        self.size = int(ckpt["preprocess"]["size"])
        self.mean, self.std = tuple(ckpt["preprocess"]["mean"]), tuple(ckpt["preprocess"]["std"])
        self.calibration = Calibration.from_dict(ckpt["calibration"])
        self.meta = ckpt["meta"]
        self.model = SpotNet(num_classes=len(self.classes))
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(f"the checkpoint's weights do not fit SpotNet: {err}") from err
        self.model.eval()
        if threads:
            torch.set_num_threads(threads)

    def prepare(self, image: np.ndarray) -> Prepared:
        x, square, framing = eval_preset(image, size=self.size, mean=self.mean, std=self.std)
        return Prepared(x, square, framing, photo_problem(image))

    @torch.inference_mode()
    def classify(self, batch: list[Prepared]) -> list[Prediction]:
        if not batch:
            return []
        logits, maps = self.model.forward_with_maps(torch.from_numpy(np.stack([p.input for p in batch])))
        logits, maps = logits.numpy(), maps.numpy()
        cal = self.calibration
        probs = softmax(logits, cal.temperature)
        energies = energy(logits, cal.temperature)
        weights = self.model.head.weight.numpy()
        results = []
        for i, prepared in enumerate(batch):
            top = int(probs[i].argmax())
            if prepared.problem:
                label, reason = UNSURE, f"the photo is {prepared.problem}"
            else:
                label, reason = decide(probs[i], float(energies[i]), self.classes, cal)
            results.append(Prediction(
                label=label,
                reason=reason,
                probabilities={c: float(p) for c, p in zip(self.classes, probs[i])},
                confidence=float(probs[i, top]),
                heatmap=class_activation_map(maps[i], weights[top], self.size),
                square=prepared.square,
                framing=prepared.framing,
            ))
        return results

    def predict(self, image: np.ndarray) -> Prediction:
        """Predict one RGB uint8 image."""
        return self.classify([self.prepare(image)])[0]

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """Predict one image file; raises data.images.ImageError for unusable files."""
        return self.predict(read_image(Path(path)))


def class_activation_map(maps: np.ndarray, class_weights: np.ndarray, size: int) -> np.ndarray:
    """CAM: the head's weights for a class over the last feature maps, upsampled to the input.

    With global average pooling and one linear layer this equals Grad-CAM for
    that layer, and needs no gradients.
    """
    cam = np.maximum(np.tensordot(class_weights, maps, axes=1), 0).astype(np.float32)
    cam = cv2.resize(cam, (size, size), interpolation=cv2.INTER_CUBIC)
    cam = np.clip(cam, 0, None)
    return cam / cam.max() if cam.max() > 0 else cam


def overlay_heatmap(square: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The framed spot with the heatmap blended over it (RGB uint8)."""
    colour = cv2.applyColorMap((heatmap * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(square, 1 - alpha, colour, alpha, 0)
