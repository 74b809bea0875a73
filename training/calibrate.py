"""Fit the calibration stored in a checkpoint, on validation data only.

- temperature: scales logits so probabilities match observed accuracy (NLL fit).
- vascular_min: the p(vascular) bar: in each domain (dermoscopy, clinical
  photos) the (1 - `max_false_vascular`) quantile of the validation
  non-vascular images' p(vascular), the strictest domain's (never below 0.5).
  The quantile interpolates between images: where the share is under one
  image (0.5% of the 96 clinical ones), the highest of them can clear it;
  a bar never below the highest was measured and not adopted (bench/README.md).
- unsure_below: the top-probability under which the answer is "unsure",
  set so that `unsure_rate` of validation images fall below it.
- ood_distance_max: the feature distance (model.decision.FeatureDistance, fitted
  on the training images) that `ood_pass` of validation images stay under.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from data.datasets import CLASSES
from model.decision import FeatureDistance, softmax


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    log_t = torch.zeros(1, requires_grad=True)
    z, y = torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(targets)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp().double(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def fit_feature_distance(features: np.ndarray, groups: np.ndarray, max_dims: int = 256) -> FeatureDistance:
    """Group means and one shared, shrunk (Ledoit-Wolf) covariance of training features, in their `max_dims`
    main directions (SpotNet's 256 and LiteNet's 112 fit whole; 1,280 would make a matrix too big to ship)."""
    names = np.unique(groups)
    means = np.stack([features[groups == g].mean(axis=0) for g in names])
    centred = features - means[np.searchsorted(names, groups)]
    directions = np.linalg.svd(centred, full_matrices=False)[2][:max_dims].T  # (features, k), orthonormal
    precision = LedoitWolf().fit(centred @ directions).precision_
    return FeatureDistance(means, directions @ np.linalg.cholesky(precision))


def fit_calibration(logits: np.ndarray, targets: np.ndarray, domains: np.ndarray, distances: np.ndarray, *,
                    max_false_vascular: float = 0.005, unsure_rate: float = 0.10,
                    ood_pass: float = 0.995) -> dict[str, float]:
    """The decision rule's settings from validation logits and feature distances. The vascular bar is at least 0.5
    and at most 0.999: above that, float32 probabilities barely differ, and a bar no photo can clear would make
    `vascular` an answer the model never gives."""
    temperature = fit_temperature(logits, targets)
    p = softmax(logits, temperature)
    vascular = CLASSES.index("vascular")
    vascular_min = 0.5
    for domain in sorted(set(domains.tolist())):  # the strictest domain sets the bar
        others = p[(targets != vascular) & (domains == domain), vascular]
        if len(others):
            vascular_min = max(vascular_min, float(np.quantile(others, 1 - max_false_vascular)))
        if 0 < len(others) * max_false_vascular < 1:
            warnings.warn(f"only {len(others)} non-vascular {domain} validation images: {max_false_vascular:.1%} of them "
                          "is less than one image, so the vascular bar rests on the highest one or two of them and "
                          "moves from run to run; read the safety rates in the training.evaluate report before use "
                          "(bench/README.md, 'Run to run')", stacklevel=2)
    return {
        "temperature": temperature,
        "vascular_min": min(vascular_min, 0.999),
        "unsure_below": float(np.quantile(p.max(axis=1), unsure_rate)),
        "ood_distance_max": float(np.quantile(distances, ood_pass)),
    }
