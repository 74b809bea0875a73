"""bench.shortcuts counts what a mark does to the answers (checked with a model that only sees ink)."""
from __future__ import annotations

import numpy as np

from bench.shortcuts import mark_effects
from data.presets import EvalSettings
from model.decision import Calibration


class InkSeer:
    """A stand-in predictor that answers `nevus` whenever the square has dark ink on it, else `other`."""

    settings = EvalSettings()  # 112 px, the project's mean and std, no colour constancy
    calibration = Calibration(temperature=1.0, unsure_below=0.5, vascular_min=0.9)

    def network(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        pixels = x * 0.25 + 0.5  # back to 0..1
        inked = (pixels.max(axis=1) < 0.45).any(axis=(1, 2))  # a pixel dark in every channel
        logits = np.zeros((len(x), 3), np.float32)
        logits[inked, 1] = logits[~inked, 2] = 5.0
        return logits, None


def test_a_model_that_learned_the_ink_changes_its_answer_for_a_pen_circle():
    skin = np.full((112, 112, 3), (215, 170, 150), np.uint8)
    squares = [skin.copy() for _ in range(6)]
    targets = np.array([2, 2, 2, 0, 0, 1])  # other, vascular, nevus
    effects = mark_effects(InkSeer(), squares, targets)
    circle = effects["pen circle"]
    # Each circle is drawn in a random ink; the dark ones flip the stand-in, pale ones may not.
    assert 0 < circle["answer changed"] <= 1 and circle["non-nevi turned nevus"] > 0
    assert circle["mean change in p(nevus), non-nevi"] > 0.1 and circle["turned vascular"] == 0
    assert set(effects) == {"pen circle", "ink writing", "ruler", "caption bar"}
