"""Shared fixtures: small synthetic photos made by the tests, so no real data is needed."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from model.checkpoint import DEFAULT_CHECKPOINT

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLOURS = {"vascular": (200, 20, 40), "nevus": (90, 55, 35), "other": (60, 60, 90)}  # RGB spot colours


def spot_photo(label: str = "vascular", *, size: int = 160, radius: int = 18, centre=None, seed: int = 0) -> np.ndarray:
    """A skin-toned, slightly textured RGB image with one round spot."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (225, 180, 160)
    noise = rng.normal(0, 6, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    cx, cy = centre or (size // 2, size // 2)
    cv2.circle(image, (cx, cy), radius, COLOURS[label], -1, cv2.LINE_AA)
    return image


def write_rgb(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """A class-per-folder dataset: 10 small photos per class, varied position and size."""
    root = tmp_path / "tree"
    for label in COLOURS:
        for i in range(10):
            image = spot_photo(label, size=96, radius=10 + i % 5, centre=(40 + i * 2, 44 + i), seed=i)
            write_rgb(root / label / f"{label}_{i}.png", image)
    return root


@pytest.fixture(scope="session")
def predictor():
    from model.predictor import Predictor

    return Predictor(DEFAULT_CHECKPOINT)


needs_shared = pytest.mark.skipif(not (SHARED_DATA / "ham10000" / "HAM10000_metadata.csv").is_file(),
                                  reason=f"real data not found at {SHARED_DATA} (tests on real data skipped)")
