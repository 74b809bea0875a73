"""The decision rule: from calibrated probabilities to an answer, erring towards caution.

Calling a melanoma "a harmless red spot" is the worst mistake this tool can
make, so `vascular` has its own, higher bar (`vascular_min`, set on
validation data so that almost no non-vascular lesion clears it). Below that
bar, or when no class is confident, or when the photo does not look like the
spots the model was trained on (`FeatureDistance`), the answer is `unsure`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNSURE = "unsure"
# A best guess this close to chance (1 / the number of groups) is no answer, whatever a calibration fitted on a model
# that learned nothing says (its "not confident" bar then sits at chance itself, and rounding noise cleared it).
CHANCE_MARGIN = 0.05


@dataclass(frozen=True)
class Calibration:
    """The decision rule's settings, fitted on validation (training.calibrate) and stored in the checkpoint."""

    temperature: float
    unsure_below: float  # top probability under this -> unsure
    vascular_min: float  # p(vascular) needed to answer "vascular"
    ood_distance_max: float = float("inf")  # feature distance above this -> unlike the training photos (inf: none)

    @classmethod
    def from_dict(cls, values: dict) -> "Calibration":
        return cls(**{k: float(values[k]) for k in cls.__dataclass_fields__ if k in values})


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class FeatureDistance:
    """How unlike the training images a photo is, seen through the network.

    The squared Mahalanobis distance of the network's pooled features (at its
    `ood_layer`, see model.net) to the nearest training group mean (one group
    per domain and class), with one shared covariance (Lee et al., NeurIPS 2018). Text, landscapes or a face
    seen from afar land far from every group even when the classifier's
    probabilities look confident. The inverse covariance is kept as a whitening
    matrix W (precision = W W^T), so that it can be limited to the main
    directions of a wide feature space (`training.calibrate.fit_feature_distance`).
    """

    def __init__(self, means: np.ndarray, whitening: np.ndarray):
        self.means = np.asarray(means, np.float32)  # (groups, features)
        self.whitening = np.asarray(whitening, np.float32)  # (features, k)
        self._whitened_means = self.means @ self.whitening  # (groups, k): whitening is linear, so once is enough

    def __call__(self, features: np.ndarray) -> np.ndarray:
        whitened = np.asarray(features, np.float32) @ self.whitening  # a matrix product: BLAS, fast
        return np.square(whitened[:, None, :] - self._whitened_means[None]).sum(axis=-1).min(axis=1)

    @classmethod
    def from_dict(cls, values: dict) -> "FeatureDistance":
        if "whitening" not in values:  # checkpoints before 2026-12 stored the precision matrix itself
            eigenvalues, vectors = np.linalg.eigh(np.asarray(values["precision"], np.float64))
            return cls(values["means"], vectors * np.sqrt(np.clip(eigenvalues, 0, None)))
        return cls(values["means"], values["whitening"])

    def to_dict(self) -> dict[str, np.ndarray]:
        return {"means": self.means, "whitening": self.whitening}


def confidence_needed(unsure_below: float, classes: int) -> float:
    """The top probability an answer needs: the calibration's bar, and never less than CHANCE_MARGIN above chance."""
    return max(unsure_below, 1 / classes + CHANCE_MARGIN)


def unlike_training(distance: float, cal: Calibration) -> bool:
    """Whether a photo's `FeatureDistance` is past the bar: it is unlike the photos the model was trained on, and its
    probabilities say nothing about it. A distance that is not a number is past every bar."""
    return not distance <= cal.ood_distance_max


def decide(probabilities: np.ndarray, distance: float, classes: tuple[str, ...], cal: Calibration,
           problem: str | None = None) -> tuple[str, str]:
    """Return (label, reason) for one image's calibrated probabilities and its `FeatureDistance`; `problem` is what
    is wrong with the photo itself (`data.quality.photo_problem`), which makes it `unsure` before anything else."""
    if problem:
        return UNSURE, f"the photo is {problem}"
    if not np.isfinite(probabilities).all():  # NaN passes every bar below: argmax would answer the first group
        return UNSURE, "the model could not rate this photo: try another photo of the spot"
    top = int(np.argmax(probabilities))
    confidence = float(probabilities[top])
    if unlike_training(distance, cal):
        return UNSURE, ("the photo does not look like the skin spots the model was trained on: retake it close up, "
                        "in daylight, with the spot in the middle")
    # Not confident first: a photo of plain skin at 37% vascular is no "red (vascular) spot" under a bar.
    if confidence < confidence_needed(cal.unsure_below, len(classes)):
        return UNSURE, f"the model is not confident: its best guess, {classes[top]}, has only {confidence:.0%}"
    if classes[top] == "vascular" and confidence < cal.vascular_min:
        shown, bar = percents_apart(confidence, cal.vascular_min)
        return UNSURE, (f"it may be a red (vascular) spot, but at {shown} the model is under the {bar} it needs "
                        "before saying a spot looks like a cherry angioma")
    if classes[top] == "vascular":
        shown, bar = percents_apart(confidence, cal.vascular_min)
        return classes[top], (f"the model rates it {shown} vascular, at or above the {bar} it needs before saying "
                              "a spot looks like a cherry angioma")
    return classes[top], f"the model rates it {confidence:.0%} {classes[top]}"


def percents_apart(value: float, bar: float) -> tuple[str, str]:
    """`value` and `bar` as percentages with the fewest decimals that tell them apart, so that an answer never reads
    "87%, under the 87% it needs" (rounding keeps their order once they differ); whole percents if they agree to
    eight decimals (for float32 probabilities: if they are equal)."""
    for digits in range(8):
        shown, needed = f"{value:.{digits}%}", f"{bar:.{digits}%}"
        if shown != needed:
            return shown, needed
    return f"{value:.0%}", f"{bar:.0%}"
