"""Fit the calibration stored in a checkpoint, on validation data only.

- temperature: scales logits so probabilities match observed accuracy (NLL fit).
- vascular_min: the p(vascular) bar; in each domain (dermoscopy, clinical
  photos) only `max_false_vascular` of validation non-vascular images may
  clear it (never below 0.5).
- unsure_below: the top-probability under which the answer is "unsure",
  set so that `unsure_rate` of validation images fall below it.
- ood_energy_max: the energy that `ood_pass` of validation images stay under.
"""
from __future__ import annotations

import numpy as np
import torch

from data.datasets import CLASSES
from model.decision import energy, softmax


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


def fit_calibration(logits: np.ndarray, targets: np.ndarray, domains: np.ndarray, *,
                    max_false_vascular: float = 0.005, unsure_rate: float = 0.10,
                    ood_pass: float = 0.995) -> dict[str, float]:
    temperature = fit_temperature(logits, targets)
    p = softmax(logits, temperature)
    vascular = CLASSES.index("vascular")
    vascular_min = 0.5
    for domain in set(domains.tolist()):  # the strictest domain sets the bar
        others = p[(targets != vascular) & (domains == domain), vascular]
        if len(others):
            vascular_min = max(vascular_min, float(np.quantile(others, 1 - max_false_vascular)))
    return {
        "temperature": temperature,
        "vascular_min": min(vascular_min, 0.999),
        "unsure_below": float(np.quantile(p.max(axis=1), unsure_rate)),
        "ood_energy_max": float(np.quantile(energy(logits, temperature), ood_pass)),
    }
