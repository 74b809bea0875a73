"""The decision rule: from calibrated probabilities to an answer, erring towards caution.

Calling a melanoma "a harmless red spot" is the worst mistake this tool can
make, so `vascular` has its own, higher bar (`vascular_min`, set on
validation data so that almost no non-vascular lesion clears it). Below that
bar, or when no class is confident, or when the photo does not look like the
spots the model was trained on, the answer is `unsure`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNSURE = "unsure"


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0
    unsure_below: float = 0.5  # top probability under this -> unsure
    vascular_min: float = 0.9  # p(vascular) needed to answer "vascular"
    ood_energy_max: float = float("inf")  # energy above this -> not a skin spot the model knows

    @classmethod
    def from_dict(cls, values: dict) -> "Calibration":
        return cls(**{k: float(values[k]) for k in cls.__dataclass_fields__ if k in values})


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Free energy -T log sum exp(logits / T): higher means less like the training data."""
    z = np.asarray(logits, np.float64) / temperature
    top = z.max(axis=-1)
    return -temperature * (top + np.log(np.exp(z - top[..., None]).sum(axis=-1)))


def decide(probabilities: np.ndarray, energy_score: float, classes: tuple[str, ...], cal: Calibration) -> tuple[str, str]:
    """Return (label, reason) for one image's calibrated probabilities."""
    top = int(np.argmax(probabilities))
    confidence = float(probabilities[top])
    if energy_score > cal.ood_energy_max:
        return UNSURE, "the photo does not look like the skin spots the model was trained on"
    if classes[top] == "vascular" and confidence < cal.vascular_min:
        return UNSURE, (
            f"it may be a red (vascular) spot, but at {confidence:.0%} the model is not sure enough "
            "to call it harmless"
        )
    if confidence < cal.unsure_below:
        return UNSURE, f"the model is not confident: its best guess, {classes[top]}, has only {confidence:.0%}"
    if classes[top] == "vascular":
        return classes[top], (f"the model rates it {confidence:.0%} vascular, above the {cal.vascular_min:.0%} "
                              "it needs before calling a spot harmless")
    return classes[top], f"the model rates it {confidence:.0%} {classes[top]}"
