"""The decision rule errs towards caution."""
from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from model.decision import Calibration, FeatureDistance, decide, percents_apart, softmax
from training.calibrate import fit_feature_distance

CLASSES = ("vascular", "nevus", "other")
CAL = Calibration(temperature=1.0, unsure_below=0.6, vascular_min=0.9, ood_distance_max=100.0)


def test_confident_answers_pass():
    assert decide(np.array([0.95, 0.03, 0.02]), 5.0, CLASSES, CAL)[0] == "vascular"
    assert decide(np.array([0.05, 0.85, 0.10]), 5.0, CLASSES, CAL)[0] == "nevus"


def test_vascular_needs_the_higher_bar():
    label, reason = decide(np.array([0.80, 0.05, 0.15]), 5.0, CLASSES, CAL)
    assert label == "unsure" and "under the 90% it needs" in reason and "cherry angioma" in reason


def test_a_weak_vascular_guess_is_not_confident_rather_than_a_red_spot_under_the_bar():
    """A photo of plain skin at 37% vascular had read "it may be a red (vascular) spot, but at 37% ..."."""
    label, reason = decide(np.array([0.37, 0.34, 0.29]), 5.0, CLASSES, CAL)
    assert label == "unsure" and reason == "the model is not confident: its best guess, vascular, has only 37%"


def test_a_probability_next_to_the_bar_never_reads_as_equal_to_it():
    """The shipped bar is 0.8661: 0.8667 clears it and 0.8656 does not, though both round to 87%."""
    cal = Calibration(temperature=1.0, unsure_below=0.6, vascular_min=0.8661, ood_distance_max=100.0)
    label, reason = decide(np.array([0.8667, 0.0833, 0.05]), 5.0, CLASSES, cal)
    assert label == "vascular" and "86.7% vascular, at or above the 86.6%" in reason
    label, reason = decide(np.array([0.8656, 0.0844, 0.05]), 5.0, CLASSES, cal)
    assert label == "unsure" and "at 86.56% the model is under the 86.61%" in reason
    assert "the model rates it 95% vascular, at or above the 87%" in decide(np.array([0.95, 0.03, 0.02]), 5.0,
                                                                            CLASSES, cal)[1]


def test_low_confidence_and_out_of_distribution_are_unsure():
    assert decide(np.array([0.2, 0.45, 0.35]), 5.0, CLASSES, CAL)[0] == "unsure"
    label, reason = decide(np.array([0.02, 0.95, 0.03]), 150.0, CLASSES, CAL)
    assert label == "unsure" and "does not look like" in reason


def test_a_best_guess_at_chance_is_no_answer_whatever_the_calibration_says():
    """A model that learned nothing gets a calibration that flattens every answer to a third, with its "not
    confident" bar at a third too: rounding noise had cleared it ("Looks like a mole", at 33%)."""
    flat = Calibration(temperature=2.67e5, unsure_below=0.3333334896893483, vascular_min=0.5, ood_distance_max=100.0)
    label, reason = decide(np.array([0.33333269, 0.33333392, 0.33333339]), 5.0, CLASSES, flat)
    assert label == "unsure" and "its best guess, nevus, has only 33%" in reason
    lenient = Calibration(temperature=1.0, unsure_below=0.0, vascular_min=0.5, ood_distance_max=100.0)
    assert decide(np.array([0.2, 0.45, 0.35]), 5.0, CLASSES, lenient)[0] == "nevus"  # a real lead still answers


def test_a_photo_problem_makes_any_answer_unsure_and_names_itself():
    """The photo checks come first: even a confident vascular answer is withheld from a blurred photo."""
    label, reason = decide(np.array([0.99, 0.005, 0.005]), 5.0, CLASSES, CAL, "blurred: hold the camera steady")
    assert (label, reason) == ("unsure", "the photo is blurred: hold the camera steady")
    assert decide(np.array([0.99, 0.005, 0.005]), 5.0, CLASSES, CAL, None)[0] == "vascular"


def test_the_reasons_for_unsure_come_in_order_photo_then_unlike_training_then_a_weak_guess():
    """Each reason tells the person what to do, so the first one that applies is the one named: a blurred photo is
    told to hold steady, a photo unlike the training ones to retake it close up, before either is "not confident"."""
    weak = np.array([0.2, 0.45, 0.35])
    assert decide(weak, 150.0, CLASSES, CAL, "blurred: hold the camera steady") == (
        "unsure", "the photo is blurred: hold the camera steady")
    label, reason = decide(weak, 150.0, CLASSES, CAL)
    assert label == "unsure" and "does not look like" in reason and "retake it close up" in reason


def test_a_best_guess_needs_five_points_over_chance():
    """With no bar from the calibration, three groups need a best guess of 1/3 + CHANCE_MARGIN (38.3%)."""
    lenient = Calibration(temperature=1.0, unsure_below=0.0, vascular_min=0.5, ood_distance_max=100.0)
    assert decide(np.array([0.31, 0.39, 0.30]), 5.0, CLASSES, lenient)[0] == "nevus"
    assert decide(np.array([0.31, 0.38, 0.31]), 5.0, CLASSES, lenient)[0] == "unsure"


def test_an_answer_other_than_vascular_names_its_own_group():
    assert decide(np.array([0.05, 0.85, 0.10]), 5.0, CLASSES, CAL) == ("nevus", "the model rates it 85% nevus")
    assert decide(np.array([0.05, 0.10, 0.85]), 5.0, CLASSES, CAL) == ("other", "the model rates it 85% other")


def test_a_calibration_without_a_distance_bar_never_calls_a_photo_unlike_training():
    """A checkpoint's calibration without ood_distance_max has no out-of-distribution check, rather than one that
    turns every photo away."""
    cal = Calibration.from_dict({"temperature": 1.0, "unsure_below": 0.6, "vascular_min": 0.9})
    assert decide(np.array([0.05, 0.85, 0.10]), 1e9, CLASSES, cal)[0] == "nevus"


def test_probabilities_or_a_distance_that_are_not_numbers_are_unsure_never_vascular():
    """A model with a NaN weight (a checkpoint from a run that diverged) rates every photo NaN: argmax names the first
    group, vascular, and NaN passes every bar (each comparison is False), so it had answered "vascular"."""
    label, reason = decide(np.full(3, np.nan), 5.0, CLASSES, CAL)
    assert label == "unsure" and "could not rate this photo" in reason
    label, reason = decide(np.array([0.99, 0.005, 0.005]), float("nan"), CLASSES, CAL)
    assert label == "unsure" and "does not look like the skin spots" in reason
    assert decide(np.array([0.99, 0.005, 0.005]), 5.0, CLASSES, CAL)[0] == "vascular"


def test_softmax():
    logits = np.array([[2.0, 0.0, -1.0]])
    assert np.isclose(softmax(logits).sum(), 1.0)
    assert softmax(logits, 10.0).max() < softmax(logits, 1.0).max()  # higher temperature, softer


def test_softmax_of_huge_logits_stays_finite():
    """exp(1000) overflows: without taking the largest logit off first the probabilities would be NaN, which no
    bar in decide() turns away."""
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 999.0]]))
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1.0)
    assert np.allclose(p[0], [1, 0, 0]) and np.argmax(p[1]) == 1


def test_feature_distance_is_to_the_nearest_group():
    distance = FeatureDistance(means=[[0.0, 0.0], [10.0, 10.0]], whitening=np.diag([1.0, 2.0]))  # precision diag(1, 4)
    assert distance(np.array([[1.0, 0.0], [10.0, 9.0], [5.0, 5.0]])).tolist() == [1.0, 4.0, 125.0]
    restored = FeatureDistance.from_dict(distance.to_dict())
    assert np.array_equal(restored.means, distance.means) and np.array_equal(restored.whitening, distance.whitening)


def test_fitted_feature_distance_tells_training_like_features_from_strangers():
    rng = np.random.default_rng(0)
    groups = np.repeat(["a", "b"], 500)
    features = rng.normal(0, 1, (1000, 8)) + np.where(groups[:, None] == "a", 0.0, 6.0)
    distance = fit_feature_distance(features, groups)
    assert np.allclose(sorted(distance.means[:, 0]), [0, 6], atol=0.2)
    near = distance(rng.normal(0, 1, (200, 8)) + 6.0)
    far = distance(rng.normal(0, 1, (200, 8)) + np.array([3.0, -6, 0, 0, 0, 0, 0, 0]))
    assert np.median(near) < 15 < np.median(far)  # 8 features: chi-square with 8 degrees of freedom near home


def test_feature_distance_in_fewer_dimensions_keeps_the_main_directions():
    """All dimensions: the same distance as a Ledoit-Wolf precision matrix on the raw features; fewer: only the
    directions along which training features vary most."""
    rng = np.random.default_rng(1)
    groups = np.repeat(["a", "b"], 400)
    features = rng.normal(0, 1, (800, 6)) * np.array([5.0, 4, 3, 0.1, 0.1, 0.1]) + (groups == "b")[:, None] * 20.0
    full, reduced = fit_feature_distance(features, groups), fit_feature_distance(features, groups, max_dims=3)
    assert full.whitening.shape == (6, 6) and reduced.whitening.shape == (6, 3)
    centred = features - full.means[(groups == "b").astype(int)]
    precision = LedoitWolf().fit(centred).precision_  # shrinkage towards a multiple of the identity: rotation-free
    assert np.allclose(full.whitening @ full.whitening.T, precision, rtol=1e-3, atol=1e-6)
    along_main = full.means[:1] + [[10.0, 0, 0, 0, 0, 0]]  # 2 standard deviations along the widest direction
    along_minor = full.means[:1] + [[0, 0, 0, 0.5, 0, 0]]  # along a narrow one, which the reduced fit drops
    assert 3 < reduced(along_main)[0] < 5 and reduced(along_minor)[0] < 0.1 < full(along_minor)[0]


def test_older_checkpoints_precision_matrix_still_reads():
    old = FeatureDistance.from_dict({"means": [[0.0, 0.0], [10.0, 10.0]], "precision": np.diag([1.0, 4.0])})
    assert np.allclose(old(np.array([[1.0, 0.0], [10.0, 9.0], [5.0, 5.0]])), [1.0, 4.0, 125.0])


def test_a_value_under_its_bar_never_reads_as_the_bar():
    """Two decimals were the most: 86.605% under 86.614% had read "at 86.61%, under the 86.61% it needs"."""
    assert percents_apart(0.86605, 0.86614) == ("86.605%", "86.614%")
    assert percents_apart(0.8661, 0.9) == ("87%", "90%")
    assert percents_apart(0.9, 0.9) == ("90%", "90%")  # equal only when they are
