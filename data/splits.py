"""Reproducible train/val/test splits that never put one lesion in two splits.

The samples are cut into `n_folds` stratified folds by group (lesion_id for
HAM10000): fold 0 is the test split, fold 1 the validation split, the rest
train. Same samples + same seed -> same split, on any machine.
"""
from __future__ import annotations

import hashlib
from collections import Counter

from sklearn.model_selection import StratifiedGroupKFold

from data.datasets import CLASSES, Sample, load_dataset

SPLITS = ("train", "val", "test")


def split_samples(samples: list[Sample], *, seed: int = 0, n_folds: int = 7) -> dict[str, list[Sample]]:
    """Split by `group`, stratified by `stratum`; each of val and test holds about 1/n_folds."""
    if len(samples) < n_folds:
        raise ValueError(f"need at least {n_folds} samples to split, got {len(samples)}")
    ordered = sorted(samples, key=lambda s: str(s.path))  # independent of file-system order
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of = [0] * len(ordered)
    strata = [s.stratum for s in ordered]
    groups = [s.group for s in ordered]
    for fold, (_, held) in enumerate(folds.split(ordered, strata, groups)):
        for i in held:
            fold_of[i] = fold
    split = {name: [] for name in SPLITS}
    for sample, fold in zip(ordered, fold_of):
        split["test" if fold == 0 else "val" if fold == 1 else "train"].append(sample)
    return split


def load_splits(roots: list[str], seed: int) -> dict[str, list[Sample]]:
    """Split each data folder on its own (by lesion/patient group) and pool the parts: training, evaluation and
    the benches all call this, so they agree on which image is in which split."""
    pooled = {name: [] for name in SPLITS}
    for root in roots:
        samples = load_dataset(root)
        folds = 7 if len(samples) >= 2000 else 5  # small sets: bigger val/test parts
        for name, part in split_samples(samples, seed=seed, n_folds=folds).items():
            pooled[name] += part
        print(f"{root}: {len(samples)} images, {folds} folds")
    for name, part in pooled.items():
        print(f"  {name}: {len(part)} images {class_counts(part)}")
    return pooled


def split_digest(samples: list[Sample]) -> str:
    """Which images a split holds (source, label and file name), as a SHA-256: a checkpoint records it so that
    evaluation can tell when the split it rebuilds is not the one the model was trained with."""
    names = sorted(f"{s.source}/{s.label}/{s.path.name}" for s in samples)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def class_counts(samples: list[Sample]) -> dict[str, int]:
    counts = Counter(s.label for s in samples)
    return {c: counts.get(c, 0) for c in CLASSES}
