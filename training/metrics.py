"""Scores for a set of predictions: what evaluation reports and what training selects on."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from data.datasets import CLASSES, Sample
from model.decision import UNSURE

VASCULAR, NEVUS = CLASSES.index("vascular"), CLASSES.index("nevus")
ANSWERS = CLASSES + (UNSURE,)  # what the decision rule can answer


def reliability_bins(probabilities: np.ndarray, targets: np.ndarray, bins: int = 15) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) of each non-empty equal-width bin of the top probability."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    found = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            found.append((float(confidence[inside].mean()), float(correct[inside].mean()), int(inside.sum())))
    return found


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    return sum(count * abs(accuracy - confidence)
               for confidence, accuracy, count in reliability_bins(probabilities, targets, bins)) / max(len(targets), 1)


def diagnoses(details: list[str]) -> np.ndarray:
    """Each source's own diagnosis in one spelling: lower case, words joined by "_" ("Basal cell carcinoma",
    "Basal_Cell_Carcinoma" and "basal-cell carcinoma" alike)."""
    return np.array(["_".join(d.lower().replace("-", " ").split()) for d in details], dtype=str)


def is_melanoma(details: list[str]) -> np.ndarray:
    """Which samples are melanomas, from each source's own diagnosis (HAM10000 `dx`, clinical categories,
    PAD-UFES-20's codes, or a `diagnosis` column of your own: "mel", "melanoma ...", "... melanoma")."""
    return _melanoma(diagnoses(details))


def is_malignant(details: list[str]) -> np.ndarray:
    """Melanomas, carcinomas and their precursors (HAM10000 mel, bcc, akiec; the clinical sources' own names; any
    "... carcinoma"): the lesions that must never be called a harmless red spot."""
    names = diagnoses(details)
    return _melanoma(names) | np.isin(names, ["bcc", "akiec", "scc", "ack", "actinic_keratosis"]) | np.char.endswith(
        names, "carcinoma")


def _melanoma(names: np.ndarray) -> np.ndarray:
    return (names == "mel") | np.char.startswith(names, "melanoma") | np.char.endswith(names, "_melanoma")


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """The mean recall over the classes present in `truth` (sklearn's), without its warnings for a class predicted
    but absent from `truth`, or for a single class: a user's folder of moles alone is a fair set to score."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(balanced_accuracy_score(truth, predicted))


def quick_scores(probabilities: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The per-epoch validation figures: balanced accuracy and vascular recall (argmax)."""
    predicted = probabilities.argmax(axis=1)
    vascular = targets == VASCULAR
    return {
        "balanced_accuracy": balanced_accuracy(targets, predicted),
        "vascular_recall": float((predicted[vascular] == VASCULAR).mean()) if vascular.any() else float("nan"),
    }


def full_report(probabilities: np.ndarray, targets: np.ndarray, decided: list[str], details: list[str]) -> dict:
    """Everything evaluation reports for one split (probabilities calibrated, `decided` after the rule)."""
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(targets.tolist()))
    # NaN (reported as n/a) where a figure is undefined: the recall of a class with no images, the precision of one
    # never predicted; 0 would read as "finds none of them".
    precision, recall, _, support = precision_recall_fscore_support(
        targets, predicted, labels=range(len(CLASSES)), zero_division=np.nan
    )
    report = {
        "images": int(len(targets)),
        "class_counts": {c: int(n) for c, n in zip(CLASSES, support)},
        "argmax": {
            "balanced_accuracy": balanced_accuracy(targets, predicted),
            "per_class": {c: {"precision": float(p), "recall": float(r)} for c, p, r in zip(CLASSES, precision, recall)},
            "confusion_matrix": confusion_matrix(targets, predicted, labels=range(len(CLASSES))).tolist(),
        },
        "ece_15_bins": expected_calibration_error(probabilities, targets),
    }
    if len(present) == len(CLASSES):
        report["roc_auc_ovr"] = {c: float(roc_auc_score(targets == i, probabilities[:, i])) for i, c in enumerate(CLASSES)}
        pair = np.isin(targets, [VASCULAR, NEVUS])
        report["vascular_vs_nevus_auc"] = float(roc_auc_score(targets[pair] == VASCULAR, probabilities[pair, VASCULAR]))
    decided = np.asarray(decided)
    sure = decided != UNSURE
    truth = np.asarray([CLASSES[t] for t in targets])
    nonvascular = truth != "vascular"
    melanoma, malignant = is_melanoma(details), is_malignant(details)
    called_vascular = decided == "vascular"
    report["with_decision_rule"] = {
        "coverage": float(sure.mean()),
        "unsure_rate": float(1 - sure.mean()),
        "accuracy_when_sure": float((decided[sure] == truth[sure]).mean()) if sure.any() else float("nan"),
        "balanced_accuracy_when_sure": balanced_accuracy(truth[sure], decided[sure]) if sure.any() else float("nan"),
        "vascular_recall": float(called_vascular[truth == "vascular"].mean()) if (truth == "vascular").any() else float("nan"),
        "vascular_precision": float((truth[called_vascular] == "vascular").mean()) if called_vascular.any() else float("nan"),
        "nonvascular_called_vascular": float(called_vascular[nonvascular].mean()) if nonvascular.any() else float("nan"),
        "melanomas": int(melanoma.sum()),
        "melanoma_called_vascular": float(called_vascular[melanoma].mean()) if melanoma.any() else float("nan"),
        # Melanomas, carcinomas and their precursors (`is_malignant`): every lesion the worst error can be made on.
        "malignant": int(malignant.sum()),
        "malignant_called_vascular": float(called_vascular[malignant].mean()) if malignant.any() else float("nan"),
        "recall": {c: float((decided[truth == c] == c).mean()) if (truth == c).any() else float("nan") for c in CLASSES},
        "confusion_matrix_rows_truth_cols_" + "_".join(ANSWERS): [
            [int(((truth == t) & (decided == d)).sum()) for d in ANSWERS] for t in CLASSES
        ],
        "answers_by_lesion_kind": answers_by_lesion_kind(decided, truth, details),
    }
    return report


def answers_by_lesion_kind(decided: np.ndarray, truth: np.ndarray, details: list[str]) -> dict[str, dict[str, int]]:
    """How the rule answered the lesions SpotCheck is judged on, each kind with its image count: every vascular
    diagnosis apart ("vascular: angioma" and "vascular: pyogenic_granuloma" say whether cherry angiomas are found,
    which the pooled vascular recall hides), then the melanomas and the other malignant lesions, for which a
    `nevus` answer ("keep an eye on it") is a false reassurance too."""
    names = diagnoses(details)
    melanoma, malignant = is_melanoma(details), is_malignant(details)
    vascular = truth == "vascular"
    kinds = {f"vascular: {name}" if name else "vascular": vascular & (names == name)  # no diagnosis: the class
             for name in sorted(set(names[vascular].tolist()))}
    kinds.update({"melanoma": melanoma, "carcinoma or precursor": malignant & ~melanoma})
    return {kind: {"images": int(mask.sum()), **{answer: int((decided[mask] == answer).sum())
                                                 for answer in ANSWERS}}
            for kind, mask in kinds.items() if mask.any()}


def validation_safety(probabilities: np.ndarray, vascular_min: float,
                      samples: list[Sample]) -> dict[str, dict[str, dict[str, int]]]:
    """Per domain: how many validation vascular, melanoma and malignant images reach the vascular bar, so that a
    run's safety can be read (and runs compared) before anyone looks at the test split."""
    over = probabilities[:, VASCULAR] >= vascular_min
    details = [s.detail for s in samples]
    kinds = {"vascular": np.array([s.label == "vascular" for s in samples]),
             "melanoma": is_melanoma(details), "malignant": is_malignant(details)}
    domains = np.array([s.domain for s in samples])
    return {domain: {kind: {"images": int((mask & (domains == domain)).sum()),
                            "over_bar": int((mask & over & (domains == domain)).sum())}
                     for kind, mask in kinds.items()}
            for domain in sorted(set(domains.tolist()))}


def safety_summary(safety: dict[str, dict[str, dict[str, int]]]) -> str:
    """`validation_safety` in words, as training prints it and the model card shows it. Melanomas and malignant
    lesions are left out where there are none (no diagnoses in a class-per-folder tree, not "0 of 0"); vascular
    images never are: "0 of 0 vascular" says the bar was not checked on any."""
    return "; ".join(f"{domain}: " + ", ".join(f"{v['over_bar']} of {v['images']} {kind}" for kind, v in kinds.items()
                                               if v["images"] or kind == "vascular")
                     for domain, kinds in safety.items())
