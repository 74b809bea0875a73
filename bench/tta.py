"""Does test-time augmentation (flips) help? `python -m bench.tta [--checkpoint PATH]`.

Scores the shipped model on the validation and test splits twice: the plain
eval preset, and the mean logits over the image and its horizontal, vertical
and double flips (4 network passes; logits and out-of-distribution features
averaged). For a fair comparison each variant gets its own calibration
(temperature and thresholds), fitted on validation exactly as training did,
with the rule's settings the model was trained with; the decision rule then
runs on the test split.
"""
from __future__ import annotations

import argparse
from typing import NamedTuple

import numpy as np

from data.datasets import CLASSES, DEFAULT_DATA
from data.splits import model_splits
from model.checkpoint import DEFAULT_CHECKPOINT
from model.decision import Calibration, decide, softmax
from model.predictor import Predictor
from training.calibrate import fit_calibration
from training.metrics import full_report


class Split(NamedTuple):
    """One split's eval-preset inputs and, per image, its photo problem, target, domain and diagnosis."""

    inputs: np.ndarray
    problems: list[str | None]
    targets: np.ndarray
    domains: np.ndarray
    details: list[str]


def run(predictor: Predictor, inputs: np.ndarray, flips: bool) -> tuple[np.ndarray, np.ndarray]:
    """Logits and feature distances, each averaged over the views."""
    views = [inputs] if not flips else [inputs, inputs[..., ::-1], inputs[..., ::-1, :], inputs[..., ::-1, ::-1]]
    logits, features = [], []
    for view in views:
        for i in range(0, len(view), 256):
            z, _, ood_features = predictor.network(np.ascontiguousarray(view[i : i + 256]))
            logits.append(z)
            features.append(ood_features)
    logits = np.mean(np.split(np.concatenate(logits), len(views)), axis=0)
    features = np.mean(np.split(np.concatenate(features), len(views)), axis=0)
    distance = predictor.feature_distance
    return logits, distance(features) if distance else np.zeros(len(features))


def scores(logits: np.ndarray, distances: np.ndarray, problems: list[str | None], targets: np.ndarray,
           details: list[str], cal: dict) -> dict[str, float]:
    """The figures `training.evaluate` reports, for these logits under calibration `cal` (`problems`: what is wrong
    with each photo itself, None for a usable one)."""
    calibration = Calibration.from_dict(cal)
    p = softmax(logits, calibration.temperature)
    decided = [decide(p[i], float(distances[i]), CLASSES, calibration, problems[i])[0] for i in range(len(p))]
    report = full_report(p, targets, decided, details)
    rule = report["with_decision_rule"]
    return {
        "balanced accuracy": report["argmax"]["balanced_accuracy"],
        "vascular recall": report["argmax"]["per_class"]["vascular"]["recall"],
        "vasc-vs-nevus AUC": report["vascular_vs_nevus_auc"],
        "ECE": report["ece_15_bins"],
        "rule: coverage": rule["coverage"],
        "rule: vascular recall": rule["vascular_recall"],
        "rule: non-vascular -> vascular": rule["nonvascular_called_vascular"],
        "rule: melanoma -> vascular": rule["melanoma_called_vascular"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.tta", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    args = p.parse_args(argv)
    predictor = Predictor(args.checkpoint, backend="torch")
    splits = model_splits(predictor.meta, args.data)
    parts = {}
    for name in ("val", "test"):
        samples = splits[name]
        prepared = [item for _, item in predictor.prepare_files([s.path for s in samples], workers=2)]
        if unreadable := [str(s.path) for s, item in zip(samples, prepared) if isinstance(item, str)]:
            raise SystemExit(f"error: {len(unreadable)} {name} images cannot be read, e.g. {unreadable[0]}")
        domains = np.array([s.domain for s in samples])
        parts[name] = Split(np.stack([p.input for p in prepared]), [p.problem for p in prepared],
                            np.array([s.target for s in samples]), domains, [s.detail for s in samples])

    flags = predictor.meta.get("flags", {})  # the decision rule's settings the model was trained with
    rule_flags = {k: flags[k] for k in ("max_false_vascular", "unsure_rate", "ood_pass") if k in flags}
    table = {}
    for flips in (False, True):
        outputs = {split: run(predictor, parts[split].inputs, flips) for split in ("val", "test")}
        val_logits, val_distances = outputs["val"]
        cal = fit_calibration(val_logits, parts["val"].targets, parts["val"].domains, val_distances, **rule_flags)
        for split in ("val", "test"):
            part, (logits, distances) = parts[split], outputs[split]
            for domain in ("dermoscopy", "clinical"):
                keep = part.domains == domain
                table[(split, domain, flips)] = scores(logits[keep], distances[keep],
                                                       [q for q, k in zip(part.problems, keep) if k],
                                                       part.targets[keep], [d for d, k in zip(part.details, keep) if k],
                                                       cal)
    for split in ("val", "test"):
        for domain in ("dermoscopy", "clinical"):
            plain, tta = table[(split, domain, False)], table[(split, domain, True)]
            print(f"\n{domain} {split} (n={int((parts[split].domains == domain).sum())})\n")
            print("| metric | plain | flips TTA | change |\n|---|---|---|---|")
            for key in plain:
                print(f"| {key} | {plain[key]:.4f} | {tta[key]:.4f} | {tta[key] - plain[key]:+.4f} |")


if __name__ == "__main__":
    main()
