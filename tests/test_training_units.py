"""Unit checks of calibration, balanced sampling, per-draw augmentation, lesion bootstrap and report rates."""
from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from data.datasets import Sample, load_class_folders
from data.flags import UsageError, interrupt_on_termination, leave_signals_to_parent, workers_starting
from data.presets import EvalSettings, TrainPreset
from model.decision import softmax
from model import export
from serve import batch
from tests.conftest import ROOT, spot_photo, write_rgb
from training import ensemble, evaluate, train
from training.calibrate import fit_calibration
from training.evaluate import bootstrap_intervals
from training.loaders import EpochDraws, decode_all, sampling_weights
from training.metrics import expected_calibration_error, full_report, is_malignant, is_melanoma, quick_scores
from training.metrics import safety_summary, validation_safety
from training.train import vascular_penalty


def nll(logits, targets, temperature):
    return float(torch.nn.functional.cross_entropy(torch.as_tensor(logits / temperature), torch.as_tensor(targets)))


def validation_logits():
    """200 validation images in two domains: 100 nevi that lean vascular (p(vascular) > 0.5 at any temperature),
    100 vascular images; clinical nevi lean harder, so that domain sets the vascular bar."""
    rng = np.random.default_rng(0)
    lean = np.concatenate([rng.uniform(0.5, 3.0, 50), rng.uniform(1.0, 5.0, 50), rng.uniform(-1.0, 4.0, 100)])
    logits = np.stack([lean, np.zeros(200), np.full(200, -30.0)], axis=1)
    targets = np.array([1] * 100 + [0] * 100)
    domains = np.array(["dermoscopy"] * 50 + ["clinical"] * 50 + ["dermoscopy", "clinical"] * 50)
    return logits, targets, domains


def test_vascular_bar_lets_through_only_the_requested_share_of_nonvascular_images_per_domain():
    """In each domain at most `max_false_vascular` of validation non-vascular images clear vascular_min,
    and in the strictest domain almost exactly that share does."""
    logits, targets, domains = validation_logits()
    cal = fit_calibration(logits, targets, domains, np.zeros(200), max_false_vascular=0.1)
    p_vascular = softmax(logits, cal["temperature"])[:, 0]
    shares = [(p_vascular[(targets == 1) & (domains == d)] > cal["vascular_min"]).mean() for d in ("dermoscopy", "clinical")]
    assert 0.5 < cal["vascular_min"] < 0.999
    assert shares[0] <= 0.1 and shares[1] == pytest.approx(0.1, abs=0.02)


def test_a_vascular_bar_resting_on_less_than_one_image_is_a_warning(recwarn):
    """100 non-vascular images per domain: 0.5% of them is half an image, so the bar rests on the top one or two."""
    logits, targets, domains = validation_logits()
    fit_calibration(logits, targets, domains, np.zeros(200), max_false_vascular=0.1)
    assert not [w for w in recwarn if "vascular bar" in str(w.message)]  # 10% of 50: five images
    with pytest.warns(UserWarning, match="only 50 non-vascular clinical validation images.*less than one image"):
        fit_calibration(logits, targets, domains, np.zeros(200), max_false_vascular=0.005)


def test_the_strictest_domain_sets_the_vascular_bar_whatever_its_name():
    """The domains are gone through in name order; with the names swapped, so that the stricter domain is
    dermoscopy (after clinical), the bar is the same."""
    logits, targets, domains = validation_logits()
    swapped = np.where(domains == "clinical", "dermoscopy", "clinical")
    bar = fit_calibration(logits, targets, domains, np.zeros(200), max_false_vascular=0.1)["vascular_min"]
    assert fit_calibration(logits, targets, swapped, np.zeros(200), max_false_vascular=0.1)["vascular_min"] == \
        pytest.approx(bar)


def test_a_domain_whose_validation_images_are_all_vascular_leaves_the_bar_to_the_others():
    """No non-vascular clinical image to set a bar on: the dermoscopy nevi set it alone (and calibration runs)."""
    logits, targets, domains = validation_logits()
    keep = ~((targets == 1) & (domains == "clinical"))  # the clinical nevi left out
    logits, targets, domains = logits[keep], targets[keep], domains[keep]
    cal = fit_calibration(logits, targets, domains, np.zeros(len(targets)), max_false_vascular=0.1)
    nevi = softmax(logits, cal["temperature"])[targets == 1, 0]
    assert cal["vascular_min"] == pytest.approx(max(0.5, np.quantile(nevi, 0.9)))


def test_unsure_threshold_puts_the_requested_share_of_validation_images_below_it():
    """unsure_below is the `unsure_rate` quantile of the top probability: 20% of validation images fall under it."""
    logits, targets, domains = validation_logits()
    cal = fit_calibration(logits, targets, domains, np.zeros(200), unsure_rate=0.2)
    top = softmax(logits, cal["temperature"]).max(axis=1)
    assert (top < cal["unsure_below"]).mean() == pytest.approx(0.2, abs=0.01)


def test_fitted_temperature_softens_overconfident_logits_and_lowers_nll():
    """Logits four times too sharp get a temperature near 4, with a lower NLL than leaving them at T=1."""
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1.5, (400, 3))
    targets = np.array([rng.choice(3, p=p) for p in softmax(base)])
    logits = 4 * base
    cal = fit_calibration(logits, targets, np.array(["dermoscopy"] * 400), np.zeros(400))
    assert 3 < cal["temperature"] < 5.5
    assert nll(logits, targets, cal["temperature"]) < nll(logits, targets, 1.0) - 0.3


def sample(label, source="ham10000", group="g"):
    domain = "clinical" if source == "clinical" else "dermoscopy"
    return Sample(Path(f"{label}.jpg"), label, group, label, source, domain)


def test_sampling_weights_draw_classes_equally_within_each_domain_and_clinical_at_its_share():
    """Each (domain, class) gets an equal share of its domain's draws; clinical photos get `clinical_share`."""
    counts = {("ham10000", "vascular"): 2, ("ham10000", "nevus"): 10, ("ham10000", "other"): 5,
              ("clinical", "vascular"): 3, ("clinical", "nevus"): 1, ("clinical", "other"): 6}
    samples = [sample(label, source) for (source, label), n in counts.items() for _ in range(n)]
    weights = sampling_weights(samples, clinical_share=0.3)
    share = {key: weights[[(s.source, s.label) == key for s in samples]].sum() / weights.sum() for key in counts}
    for (source, _), value in share.items():
        assert value == pytest.approx(0.1 if source == "clinical" else 0.7 / 3)


def test_sampling_weights_without_clinical_photos_balance_the_classes():
    """With dermoscopy only, every class is a third of the draws however many images it has."""
    samples = [sample("vascular")] * 2 + [sample("nevus")] * 30 + [sample("other")] * 8
    weights = sampling_weights(samples, clinical_share=0.3)
    for label in ("vascular", "nevus", "other"):
        assert weights[[s.label == label for s in samples]].sum() / weights.sum() == pytest.approx(1 / 3)


def epoch_draws(epoch=0):
    pixels = spot_photo("vascular", size=48, radius=8)[None]
    preset = TrainPreset(settings=EvalSettings(size=32))
    return EpochDraws(pixels, np.array([0]), np.ones(1), preset, clinical=np.array([False]), draws=4, seed=7, epoch=epoch)


def test_each_draw_of_an_image_is_augmented_differently_yet_reproducibly():
    """Draws of the same image within an epoch differ; the same (seed, epoch, position) gives the same tensor."""
    draws = epoch_draws()
    first, second = draws[0][0], draws[1][0]
    assert not torch.equal(first, second)
    assert torch.equal(epoch_draws()[1][0], second)
    assert not torch.equal(epoch_draws(epoch=1)[1][0], second)


def rule_samples(groups):
    """30 images: 20 vascular, with the 11 in group `groups[0]` all missed by the rule, 5 nevi and 5 others."""
    labels = ["vascular"] * 20 + ["nevus"] * 5 + ["other"] * 5
    decided = ["unsure"] * 11 + labels[11:]
    samples = [Sample(Path(f"{i}.jpg"), label, group, label, "ham10000", "dermoscopy") for i, (label, group) in
               enumerate(zip(labels, groups))]
    probs = np.eye(3)[[s.target for s in samples]]
    return samples, probs, decided


def test_bootstrap_resamples_whole_lesions_not_single_images():
    """Eleven missed images of one lesion rise and fall together, so the lesion interval for vascular recall is much
    wider than when each image is its own lesion, and reaches 1 (resamples without that lesion)."""
    by_lesion = ["a"] * 11 + [f"v{i:02d}" for i in range(19)]
    by_image = [f"i{i:02d}" for i in range(30)]
    lesion = bootstrap_intervals(*rule_samples(by_lesion), rounds=300)["vascular_recall_with_rule"]
    image = bootstrap_intervals(*rule_samples(by_image), rounds=300)["vascular_recall_with_rule"]
    assert lesion[1] == 1.0 and image[1] < 0.75
    assert lesion[1] - lesion[0] > (image[1] - image[0]) + 0.2


def test_expected_calibration_error_by_hand():
    """Two 15-bin bins: 0.9 confident at 50% accuracy and 0.7 at 100% give 0.5*0.4 + 0.5*0.3 = 0.35."""
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])
    assert expected_calibration_error(probs, np.array([0, 1, 1, 2])) == pytest.approx(0.35)


def test_expected_calibration_error_is_zero_when_confidence_matches_accuracy():
    """80% confident and right 8 times in 10: no calibration error."""
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))
    assert expected_calibration_error(probs, np.array([0] * 8 + [1] * 2)) == pytest.approx(0, abs=1e-12)


def decided_report():
    """Eight images: 3 vascular (2 called vascular), 2 nevi (1 called vascular), 3 others, two of them melanomas
    (one called vascular); two answers are unsure."""
    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    decided = ["vascular", "vascular", "unsure", "vascular", "nevus", "unsure", "other", "vascular"]
    details = ["vasc", "vasc", "vasc", "nv", "nv", "bkl", "Malignant_Melanoma", "mel"]
    return full_report(np.eye(3)[targets] * 0.8 + 0.2 / 3, targets, decided, details)["with_decision_rule"]


def test_rule_rates_on_a_hand_made_case():
    """Coverage 6/8, vascular recall 2/3, precision 2/4, non-vascular called vascular 2/5."""
    rule = decided_report()
    assert rule["coverage"] == pytest.approx(0.75) and rule["unsure_rate"] == pytest.approx(0.25)
    assert rule["vascular_recall"] == pytest.approx(2 / 3)
    assert rule["vascular_precision"] == pytest.approx(0.5)
    assert rule["nonvascular_called_vascular"] == pytest.approx(0.4)


def test_melanomas_called_vascular_are_counted():
    """Both melanoma spellings count; one of the two was called vascular."""
    rule = decided_report()
    assert rule["melanomas"] == 2 and rule["melanoma_called_vascular"] == pytest.approx(0.5)


def test_carcinomas_called_vascular_are_counted_with_the_melanomas():
    """A basal cell carcinoma answered `vascular` is the same worst error; it was hidden among the non-vascular."""
    targets = np.array([2, 2, 2, 2])
    decided = ["vascular", "other", "vascular", "unsure"]
    details = ["bcc", "Squamous_Cell_Carcinoma", "bkl", "mel"]
    rule = full_report(np.eye(3)[targets] * 0.8 + 0.2 / 3, targets, decided, details)["with_decision_rule"]
    assert rule["malignant"] == 3 and rule["malignant_called_vascular"] == pytest.approx(1 / 3)
    assert rule["melanoma_called_vascular"] == 0


def test_answers_are_counted_for_each_vascular_diagnosis_and_for_the_malignant_lesions():
    """Cherry angiomas apart from pyogenic granulomas (the pooled vascular recall hides which are found), and a
    melanoma answered `nevus` counted as plainly as one answered `vascular`."""
    targets = np.array([0, 0, 0, 2, 2, 2, 2, 1])
    decided = ["vascular", "unsure", "vascular", "nevus", "vascular", "nevus", "other", "nevus"]
    details = ["Angioma", "Angioma", "Pyogenic_Granuloma", "Malignant_Melanoma", "mel", "bcc", "bkl", "nv"]
    rule = full_report(np.eye(3)[targets] * 0.8 + 0.2 / 3, targets, decided, details)["with_decision_rule"]
    none = {"vascular": 0, "nevus": 0, "other": 0, "unsure": 0}
    assert rule["answers_by_lesion_kind"] == {
        "vascular: angioma": {**none, "images": 2, "vascular": 1, "unsure": 1},
        "vascular: pyogenic_granuloma": {**none, "images": 1, "vascular": 1},
        "melanoma": {**none, "images": 2, "nevus": 1, "vascular": 1},
        "carcinoma or precursor": {**none, "images": 1, "nevus": 1},
    }


def test_validation_safety_counts_images_at_or_over_the_bar_per_domain_and_kind():
    """What a run records before anyone looks at test: of each domain's vascular, melanoma and malignant
    validation images, how many reach the vascular bar (at the bar counts: the rule answers `vascular` there)."""
    def sample(label, detail, source):
        return Sample(Path(f"{detail}.jpg"), label, detail, detail, source,
                      "clinical" if source == "clinical" else "dermoscopy", detail)

    samples = [sample("vascular", "vasc", "ham10000"), sample("other", "mel", "ham10000"),
               sample("other", "bcc", "ham10000"), sample("other", "mel", "ham10000"),
               sample("other", "Malignant_Melanoma", "clinical"), sample("nevus", "nv", "clinical")]
    p_vascular = np.array([0.95, 0.90, 0.97, 0.20, 0.99, 0.99])
    probabilities = np.stack([p_vascular, 1 - p_vascular, np.zeros(6)], axis=1)
    safety = validation_safety(probabilities, 0.90, samples)
    assert safety["dermoscopy"] == {"vascular": {"images": 1, "over_bar": 1}, "melanoma": {"images": 2, "over_bar": 1},
                                    "malignant": {"images": 3, "over_bar": 2}}
    assert safety["clinical"] == {"vascular": {"images": 0, "over_bar": 0}, "melanoma": {"images": 1, "over_bar": 1},
                                  "malignant": {"images": 1, "over_bar": 1}}
    assert safety_summary(safety) == ("clinical: 0 of 0 vascular, 1 of 1 melanoma, 1 of 1 malignant; "
                                      "dermoscopy: 1 of 1 vascular, 1 of 2 melanoma, 2 of 3 malignant")
    no_diagnoses = {"dermoscopy": {**safety["dermoscopy"], "melanoma": {"images": 0, "over_bar": 0}}}
    assert safety_summary(no_diagnoses) == "dermoscopy: 1 of 1 vascular, 2 of 3 malignant"  # no "0 of 0 melanoma"


def test_vascular_penalty_is_minus_log_of_not_vascular_and_stays_finite():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [80.0, -40.0, -40.0]])
    expected = -torch.log(1 - torch.softmax(logits[:2], 1)[:, 0])
    penalty = vascular_penalty(logits)
    assert torch.allclose(penalty[:2], expected)
    assert torch.isfinite(penalty[2]) and penalty[2] == pytest.approx(120 - np.log(2), rel=1e-4)


def test_malignant_lesions_are_named_by_each_sources_own_diagnosis():
    details = ["mel", "bcc", "akiec", "nv", "vasc", "bkl", "df", "Malignant_Melanoma", "Basal_Cell_Carcinoma",
               "melanoma: Melanoma in situ", "BCC", "Cherry angioma", "Keloid", "vascular",
               "MEL", "SCC", "ACK", "NEV", "SEK"]  # PAD-UFES-20's codes
    assert is_malignant(details).tolist() == [True] * 3 + [False] * 4 + [True] * 4 + [False] * 3 + [True] * 3 + [False] * 2
    assert is_melanoma(["MEL", "mel", "SCC"]).tolist() == [True, True, False]
    # A clinic's own `diagnosis` column, spelled as people write it.
    own = ["Nodular melanoma", "Melanoma in situ", "amelanotic  melanoma", "Squamous cell carcinoma",
           "basal-cell carcinoma", "Actinic keratosis", "Merkel cell carcinoma",
           "Dysplastic nevus (close to but not meeting the criteria for melanoma)", "Cherry angioma", "Melanocytic nevus",
           "Seborrhoeic keratosis", ""]
    assert is_melanoma(own).tolist() == [True] * 3 + [False] * 9
    assert is_malignant(own).tolist() == [True] * 7 + [False] * 5


def test_the_default_command_is_the_one_that_trained_the_shipped_model():
    """The README promises that `python -m training.train` with no flags reproduces the shipped model's recipe:
    a changed default must come with a retrained model (or this test says which flag moved)."""
    from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from training.train import parse_args

    # Flags added since the shipped model was trained, with the value that means what it did.
    added = {"start_from": None, "ood_pass": 0.995}  # None: from ImageNet's weights; 0.995 was fixed in the code
    shipped = {**added, **load_checkpoint(DEFAULT_CHECKPOINT)["meta"]["flags"]}
    defaults = vars(parse_args([]))
    # The machine's folders (and what they hold) and processors, not the recipe.
    where = {"data", "folder_domain", "out", "overwrite", "device", "workers", "decode_workers", "threads"}
    assert {k: v for k, v in defaults.items() if k not in where} == {k: v for k, v in shipped.items() if k not in where}


def test_the_command_to_resume_repeats_the_machine_flags_given():
    """A resumed run takes --device and --threads from its own command line, not from last.pt: the advice printed on
    Ctrl+C had left them out, so a run on the GPU, or on one thread, would have gone on otherwise."""
    from training.runs import resume_command
    from training.train import named_flags, parse_args

    argv = ["--out", "runs/my run", "--device", "cuda", "--threads", "1", "--epochs", "3"]
    assert resume_command(parse_args(argv), named_flags(argv)) == \
        "python -m training.train --out 'runs/my run' --resume --device cuda --threads 1"
    assert resume_command(parse_args([]), named_flags([])) == "python -m training.train --out runs/spotcheck --resume"
    # A resumed run given its data's new place: last.pt names the old one until its next epoch is saved.
    argv = ["--out", "runs/x", "--resume", "--data", "/disk/ham 2", "--workers", "0"]
    assert resume_command(parse_args(argv), named_flags(argv)) == \
        "python -m training.train --out runs/x --resume --data '/disk/ham 2' --workers 0"


def test_training_frames_a_photo_over_the_working_size_as_the_predictor_does(tmp_path, predictor, monkeypatch):
    """Validation and calibration see exactly the square a served model sees, for a photo of any size: both frame
    the photo's working copy (data.images.working_copy), not the full-size photo."""
    import data.images
    from data.images import read_image
    from tests.conftest import write_rgb
    from training.loaders import decode_all

    monkeypatch.setattr(data.images, "WORKING_SIDE", 300)  # a 600-px photo stands in for a 48-megapixel one
    path = write_rgb(tmp_path / "big.png", spot_photo("nevus", size=600, radius=40, seed=5))
    sample = Sample(path=path, label="nevus", group="a", stratum="nevus", source="folder", domain="clinical")
    pixels, kept = decode_all([sample], predictor.settings.size, workers=1, desc="decode")
    assert kept == [sample] and np.array_equal(pixels[0], predictor.prepare(read_image(path)).square)


def test_a_set_of_one_class_reports_the_other_classes_as_undefined_without_warnings():
    """A clinic's folder of moles alone: the vascular recall is undefined (n/a), not 0 ("finds no angiomas"), and
    scoring it prints none of sklearn's warnings about classes that are absent."""
    import warnings

    from training.report import as_text

    targets = np.full(6, 1)  # nevus only
    probabilities = np.tile([0.1, 0.8, 0.1], (6, 1))
    probabilities[0] = [0.7, 0.2, 0.1]  # one called vascular
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = full_report(probabilities, targets, ["nevus"] * 6, [""] * 6)
    per_class = report["argmax"]["per_class"]
    assert np.isnan(per_class["vascular"]["recall"]) and per_class["vascular"]["precision"] == 0.0
    assert per_class["nevus"]["recall"] == pytest.approx(5 / 6) and np.isnan(per_class["other"]["precision"])
    assert report["argmax"]["balanced_accuracy"] == pytest.approx(5 / 6)
    assert as_text(per_class["vascular"]["recall"]) == "n/a" and as_text(0.25) == "0.250"


def test_warnings_for_the_person_running_a_command_are_plain_lines(monkeypatch):
    import warnings

    from data.flags import plain_warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # put back afterwards
    plain_warnings()
    line = warnings.formatwarning(UserWarning("only 5 validation images"), UserWarning, "/x/train.py", 476, "code")
    assert line == "warning: only 5 validation images\n"


def test_a_model_calibration_had_to_flatten_is_named_as_one_that_learned_nothing():
    from training.train import flat_calibration

    assert flat_calibration(0.93, 0.88) is None  # the shipped model's
    problem = flat_calibration(806494.56, 0.333)  # a one-epoch run on 36 images
    assert "learned next to nothing" in problem and "0.33" in problem and "train longer" in problem


def test_a_model_fine_tuned_from_the_shipped_one_credits_the_clinical_photos_it_learned_from():
    """The shipped checkpoint predates the record of its clinical sources: its card credits the project's set, and so
    must a model fine-tuned from it (its meta spells them out, rather than an empty list that credits none)."""
    from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from training.report import CLINICAL_CREDITS, clinical_sources_of
    from training.train import inherited_record

    shipped = load_checkpoint(DEFAULT_CHECKPOINT)["meta"]
    assert "clinical_sources" not in shipped and "clinical" in shipped["sources"]
    assert inherited_record(shipped)["clinical_sources"] == list(CLINICAL_CREDITS) == clinical_sources_of(shipped)
    assert inherited_record({"sources": ["ham10000"]})["clinical_sources"] == []
    assert inherited_record({"sources": ["clinical"], "clinical_sources": ["myphone"]})["clinical_sources"] == ["myphone"]


def test_a_moving_average_that_lags_the_raw_weights_is_named():
    from training.train import lagging_average

    assert lagging_average({"score": 0.88, "raw_score": 0.87}, 0.995, 790) is None  # the shipped recipe's last epoch
    problem = lagging_average({"score": 0.333, "raw_score": 1.0}, 0.995, 30)  # a 3-epoch run of 10 steps each
    assert "scores 0.33 on validation and the raw weights 1.00" in problem and "86% of the starting" in problem
    assert "--keep best" in problem


def test_the_feature_distance_bar_lets_the_requested_share_of_validation_images_through():
    logits, targets, domains = validation_logits()
    distances = np.random.default_rng(0).gamma(4.0, 10.0, 200)
    cal = fit_calibration(logits, targets, domains, distances, ood_pass=0.9)
    assert (distances <= cal["ood_distance_max"]).mean() == pytest.approx(0.9, abs=0.01)


def test_the_vascular_bar_never_falls_under_half_nor_reaches_certainty():
    targets = np.array([1] * 100 + [0] * 100)
    domains = np.array(["dermoscopy"] * 200)
    shy = np.stack([np.full(200, -3.0), np.zeros(200), np.zeros(200)], axis=1)  # p(vascular) ~0.02 everywhere
    assert fit_calibration(shy, targets, domains, np.zeros(200))["vascular_min"] == 0.5
    sure = np.zeros((200, 3))
    sure[:90, 1], sure[90:100, 0], sure[100:, 0] = 50.0, 400.0, 50.0  # ten nevi taken for vascular beyond any doubt
    assert fit_calibration(sure, targets, domains, np.zeros(200))["vascular_min"] == 0.999


def test_ece_weighs_each_bin_by_its_images_and_counts_certain_answers():
    """One bin of 3 images at 0.9 (all right: 0.1 off), one of 1 at 0.5 (wrong: 0.5 off): (3*0.1 + 0.5) / 4 = 0.2,
    not the unweighted mean 0.3; a top probability of exactly 1 that is wrong is an error of 1, not left out."""
    probs = np.array([[0.9, 0.05, 0.05]] * 3 + [[0.5, 0.3, 0.2]])
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.2)
    assert expected_calibration_error(np.array([[1.0, 0.0, 0.0]]), np.array([1])) == pytest.approx(1.0)


def test_rule_accuracy_and_recall_count_only_the_answers_given():
    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    decided = ["vascular", "vascular", "unsure", "vascular", "nevus", "unsure", "other", "vascular"]
    report = full_report(np.eye(3)[targets] * 0.8 + 0.2 / 3, targets, decided, ["x"] * 8)
    rule = report["with_decision_rule"]
    assert rule["accuracy_when_sure"] == pytest.approx(4 / 6)  # of the six answers, four right
    assert rule["balanced_accuracy_when_sure"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert rule["recall"] == pytest.approx({"vascular": 2 / 3, "nevus": 1 / 2, "other": 1 / 3})


def test_vascular_vs_nevus_auc_ranks_vascular_images_by_p_vascular():
    targets = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6],
                      [0.1, 0.1, 0.8]])
    report = full_report(probs, targets, ["unsure"] * 6, ["x"] * 6)
    assert report["vascular_vs_nevus_auc"] == 1.0


def test_quick_vascular_recall_is_the_share_of_vascular_images_argmaxed_vascular():
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert quick_scores(probs, np.array([0, 0, 0, 1, 2]))["vascular_recall"] == pytest.approx(2 / 3)


def bootstrap_case():
    """20 lesions, one image each, sorted g00..g19: 10 vascular all argmaxed nevus (balanced accuracy 2/3 in every
    resample) but answered vascular; 5 others; 5 nevi, the last lesion of all (g19) answered vascular."""
    labels = ["vascular"] * 10 + ["other"] * 5 + ["nevus"] * 5
    decided = ["vascular"] * 10 + ["other"] * 5 + ["nevus"] * 4 + ["vascular"]
    samples = [Sample(Path(f"{i}.jpg"), label, f"g{i:02d}", label, "ham10000", "dermoscopy")
               for i, label in enumerate(labels)]
    probs = np.eye(3)[[1 if s.label == "vascular" else s.target for s in samples]]
    return bootstrap_intervals(samples, probs, decided, rounds=2000)


def test_bootstrap_intervals_are_95_percent_and_every_lesion_can_be_drawn():
    ci = bootstrap_case()
    assert ci["balanced_accuracy"] == pytest.approx([2 / 3, 2 / 3])  # balanced, not plain accuracy (about 0.5)
    low, high = ci["nonvascular_called_vascular"]
    assert low == 0 and high > 0  # g19 (last) is drawn; the non-vascular rate counts nevi and others alike
    assert high == pytest.approx(1 / 3)  # the 97.5th percentile, seed 0 (the 95th is 2/7)


def test_decoding_workers_stop_quietly_in_a_run_that_takes_a_kill_as_ctrl_c(class_tree, capfd):
    """Training turns a `kill` into Ctrl+C (interrupt_on_termination), and its decoding pool stops its forked workers
    with SIGTERM: inheriting the handler, each had printed a KeyboardInterrupt traceback (half the runs), or hung."""
    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {name: signal.getsignal(getattr(signal, name)) for name in names}
    try:
        for name in names:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        interrupt_on_termination()
        samples = load_class_folders(class_tree)[:8]
        for _ in range(6):
            assert len(decode_all(samples, 32, workers=2, desc="decode")[1]) == 8
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
    assert "Traceback" not in capfd.readouterr().err


DECODE_UNTIL_INTERRUPTED = """
import sys
from pathlib import Path
from data.datasets import load_class_folders
from training.loaders import decode_all
samples = load_class_folders(Path(sys.argv[1])) * 300
print("decoding", flush=True)
try:
    decode_all(samples, 32, workers=2, desc="decode")
    print("finished before the Ctrl+C", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory) -> Path:
    """30 photo-sized textured JPEGs in class folders: decoding them keeps workers busy as HAM10000's images do."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for i in range(30):
        texture = cv2.GaussianBlur(rng.integers(0, 256, (150, 200, 3), np.uint8), (5, 5), 2)
        write_rgb(root / ("vascular", "nevus", "other")[i % 3] / f"{i}.jpg", texture)
    return root


@pytest.mark.parametrize("attempt", range(4))
def test_ctrl_c_while_decoding_stops_the_workers_quietly(jpeg_tree, attempt):
    """A terminal sends Ctrl+C to every process of the command, the decoding workers too: each had printed a
    KeyboardInterrupt traceback ("Process ForkPoolWorker-3: ..."), and in 2 of 20 tries the parent hung for ever,
    stopping a pool one of whose workers had died holding its queue's lock. The workers now leave it to the parent.
    (Before the fix, about one try in three went wrong.)"""
    run = subprocess.Popen([sys.executable, "-c", DECODE_UNTIL_INTERRUPTED, str(jpeg_tree)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert run.stdout.readline() == "decoding\n"
        time.sleep(1.5)  # the workers have started
        os.killpg(run.pid, signal.SIGINT)  # as a terminal does: the whole process group
        out, err = run.communicate(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # a hung one
    assert out == "interrupted\n" and "Traceback" not in err and "ForkPoolWorker" not in err


def test_a_worker_leaves_ctrl_c_and_a_kill_to_its_parent():
    """What the test above catches one try in three, for certain: a worker ignores Ctrl+C, and a SIGTERM stops it;
    started with them held back (`workers_starting`), it lets them through once its initializer has run."""
    with workers_starting():
        pool = multiprocessing.get_context("fork").Pool(1, initializer=leave_signals_to_parent)
    with pool:
        assert pool.apply(signal.getsignal, (signal.SIGINT,)) == signal.SIG_IGN
        assert pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
        assert pool.apply(signal.pthread_sigmask, (signal.SIG_BLOCK, [])) == set()


def test_a_ctrl_c_that_reaches_a_worker_before_its_initializer_is_dropped():
    """The gap `workers_starting` closes: a Ctrl+C between a worker's fork and its initializer had reached it while
    it still had its parent's handlers (a KeyboardInterrupt traceback in the worker). Forked with it held back, the
    worker drops it when its initializer ignores Ctrl+C."""
    with workers_starting():
        pid = os.fork()
        if pid == 0:  # the worker, its initializer not run yet
            try:
                os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl+C
                time.sleep(0.05)
                leave_signals_to_parent()
                time.sleep(0.05)
            except KeyboardInterrupt:
                os._exit(1)
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # the parent's signals let through again
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # one its caller held back stays so
    try:
        with workers_starting():
            pass
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == {signal.SIGHUP}
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


@pytest.mark.parametrize("bad", ["missing.pt", "garbage.pt", "folder"])
def test_a_checkpoint_that_cannot_be_used_is_exit_status_2_for_every_command(tmp_path, capsys, bad):
    """Evaluation had exited 1 where batch scoring and the export exit 2 (bad arguments) for the same --checkpoint."""
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "folder").mkdir()
    checkpoint = str(tmp_path / bad)
    photos = tmp_path / "photos"
    write_rgb(photos / "a.png", spot_photo("nevus", size=64))
    assert export.main(["--checkpoint", checkpoint]) == 2
    assert batch.main([str(photos), "--out", str(tmp_path / "s.csv"), "--checkpoint", checkpoint]) == 2
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--checkpoint", checkpoint, "--data", str(photos), "--out", str(tmp_path / "report")])
    assert stop.value.code == 2
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ") and checkpoint in line]
    assert len(said) == 3  # each names the file given
    for command in ([train.main, ["--start-from", checkpoint, "--data", str(photos), "--out", str(tmp_path / "run")]],
                    [ensemble.main, [checkpoint, checkpoint, "--out", str(tmp_path / "average")]]):
        with pytest.raises(UsageError, match=f"{checkpoint}|{bad}"):  # exit status 2 (the test below)
            command[0](command[1])


def command_status(module: str, *flags: str) -> tuple[int, str]:
    """Run `python -m module flags`, as a user does; its exit status and what it printed on stderr."""
    done = subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stderr


def test_training_and_its_other_commands_exit_2_for_a_refused_command_line_and_1_for_data_that_fails(tmp_path):
    """Training's refusals had exited 1, the status of work that failed, where batch scoring, the export and
    evaluation exit 2 for a command line they refuse; a missing --data folder had been 1 in evaluation too."""
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    status, said = command_status("training.train", "--data", str(missing), "--out", str(tmp_path / "run"))
    assert status == 2 and f"error: data folder {missing} does not exist" in said and "Traceback" not in said, said
    status, said = command_status("training.train", "--data", str(empty), "--out", str(tmp_path / "run"))
    assert status == 1 and f"error: no images found under {empty}" in said and "Traceback" not in said, said
    status, said = command_status("training.ensemble", str(missing / "a.pt"), str(missing / "b.pt"), "--out",
                                  str(tmp_path / "average"))
    assert status == 2 and f"error: no checkpoint file at {missing / 'a.pt'}" in said and "Traceback" not in said, said
    status, said = command_status("training.evaluate", "--data", str(missing), "--out", str(tmp_path / "report"))
    assert status == 2 and f"error: data folder {missing} does not exist" in said and "Traceback" not in said, said
    assert not (tmp_path / "run").exists() and not (tmp_path / "average").exists()


def test_a_report_folder_that_cannot_be_written_is_refused_before_the_scoring(tmp_path, capsys, monkeypatch):
    """A --out evaluation could not write into had failed with a traceback, and only after scoring every image."""
    photos = tmp_path / "photos"
    write_rgb(photos / "nevus" / "a.png", spot_photo("nevus", size=64))
    (tmp_path / "a file").write_text("not a folder")
    with monkeypatch.context() as patched:
        patched.setattr(evaluate, "predict_samples", lambda *a: pytest.fail("scored before checking the report"))
        for out, why in ((tmp_path / "a file" / "report", f"{tmp_path / 'a file'} is a file, not a folder"),
                         (tmp_path / "locked", "Permission denied")):
            with monkeypatch.context() as locked:
                if out.name == "locked":  # (tests may run as root, whom no folder's permissions stop)
                    locked.setattr(tempfile, "TemporaryFile", lambda **kw: (_ for _ in ()).throw(
                        PermissionError(errno.EACCES, "Permission denied")))
                with pytest.raises(SystemExit) as stop:
                    evaluate.main(["--data", str(photos), "--split", "all", "--out", str(out)])
            assert stop.value.code == 2
            assert f"error: cannot write the report into {out}: {why}\n" in capsys.readouterr().err
    # A disk that fills up while the report is written: exit 1, as training and the export.
    monkeypatch.setattr(evaluate, "write_report", lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--data", str(photos), "--split", "all", "--out", str(tmp_path / "full")])
    assert stop.value.code == 1 and "No space left on device (it may be incomplete)" in capsys.readouterr().err


def test_checksums_left_of_a_run_count_as_the_run_and_go_with_it(tmp_path, capsys):
    """--overwrite had left last.pt.sha256 and best.pt.sha256 behind, naming checkpoints that were gone."""
    from training.runs import previous_run, replace_run

    out = tmp_path / "run"
    out.mkdir()
    for name in ("last.pt", "best.pt"):
        (out / f"{name}.sha256").write_text(f"{'0' * 64}  {name}\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="already holds a training run"):
        previous_run(out, overwrite=False)
    replace_run(out, previous_run(out, overwrite=True))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
