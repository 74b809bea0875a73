"""The decision rule errs towards caution."""
from __future__ import annotations

import numpy as np

from model.decision import Calibration, decide, energy, softmax

CLASSES = ("vascular", "nevus", "other")
CAL = Calibration(temperature=1.0, unsure_below=0.6, vascular_min=0.9, ood_energy_max=-1.0)


def test_confident_answers_pass():
    assert decide(np.array([0.95, 0.03, 0.02]), -5.0, CLASSES, CAL)[0] == "vascular"
    assert decide(np.array([0.05, 0.85, 0.10]), -5.0, CLASSES, CAL)[0] == "nevus"


def test_vascular_needs_the_higher_bar():
    label, reason = decide(np.array([0.80, 0.05, 0.15]), -5.0, CLASSES, CAL)
    assert label == "unsure" and "harmless" in reason


def test_low_confidence_and_out_of_distribution_are_unsure():
    assert decide(np.array([0.2, 0.45, 0.35]), -5.0, CLASSES, CAL)[0] == "unsure"
    label, reason = decide(np.array([0.02, 0.95, 0.03]), 0.5, CLASSES, CAL)
    assert label == "unsure" and "does not look like" in reason


def test_softmax_and_energy():
    logits = np.array([[2.0, 0.0, -1.0]])
    assert np.isclose(softmax(logits).sum(), 1.0)
    assert softmax(logits, 10.0).max() < softmax(logits, 1.0).max()  # higher temperature, softer
    assert energy(np.array([[10.0, 0, 0]]))[0] < energy(np.array([[0.1, 0, 0]]))[0]
