"""Does the answer hold when the spot is small in a wide photo? `python -m bench.zoomed_out [--checkpoints A B]`.

Phone photos often show a small spot in a wide field of skin, while HAM10000
and most clinical validation photos are close-ups. This bench takes every
validation image, frames it as the predictor does, and shows it again with the
spot shrunk to a half and a quarter of the picture on a surround of its own
skin colour (`data.augment.zoom_out`, seeded per image, so every model sees the
same pictures). Each picture goes the whole prediction path: the predictor
finds and frames the spot (`framed`), or, for comparison, is handed the whole
picture (`whole picture`), as it would be without framing. The photo checks
(blur, light, skin) are left out: the pictures are HAM10000's 150-pixel frames
enlarged, which the sharpness check rightly finds soft.

Caveat: the surround is made by the same function that `--zoom-out-p` trains
with, so a model trained with it has seen such surrounds, though never these
images. Validation only.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from bench.compare import framed_validation, parse_models, publish, validation_key
from data.datasets import CLASSES
from data.augment import zoom_out
from model.decision import UNSURE
from model.predictor import Predictor

RESULTS = Path(__file__).with_name("zoomed_out.md")
SCALES = (1.0, 0.5, 0.25)  # the spot's share of the picture's side; 1.0 = as it is
CANVAS = 336  # side of the pictures, in pixels: at a quarter the spot is still 84 px, no smaller than the model input
MODES = ("framed", "whole picture")
VASCULAR = CLASSES.index("vascular")


def pictures(squares: list[np.ndarray], scale: float) -> list[np.ndarray]:
    """The framed validation squares with the spot shrunk to `scale` of the side (seeded per image)."""
    if scale == 1.0:
        return squares
    return [zoom_out(s, np.random.default_rng([i, 7]), scale=scale) for i, s in enumerate(squares)]


def scores(predictor: Predictor, images: list[np.ndarray], targets: np.ndarray, mode: str) -> dict[str, float]:
    """Argmax balanced accuracy and vascular recall, and the decision rule's answered share and non-vascular
    pictures called vascular, through `Predictor.prepare` (framing) and `classify` (the decision rule, without
    the photo checks)."""
    labels, argmax = [], []
    for start in range(0, len(images), 128):
        batch = [replace(predictor.prepare(im, box=(0, 0, im.shape[1], im.shape[0]) if mode == "whole picture"
                                           else None), problem=None) for im in images[start : start + 128]]
        for prediction in predictor.classify(batch):
            labels.append(prediction.label)
            argmax.append(CLASSES.index(prediction.top))
    labels, argmax = np.array(labels), np.array(argmax)
    vascular = targets == VASCULAR
    return {"balanced accuracy": float(balanced_accuracy_score(targets, argmax)),
            "vascular recall": float((argmax[vascular] == VASCULAR).mean()) if vascular.any() else float("nan"),
            "answered": float((labels != UNSURE).mean()),
            "non-vascular called vascular": float((labels[~vascular] == "vascular").mean())}


def main(argv: list[str] | None = None) -> None:
    args, names = parse_models("python -m bench.zoomed_out", __doc__, RESULTS, argv)

    columns = ("balanced accuracy", "vascular recall", "answered", "non-vascular called vascular")
    lines = ["| model | validation images | spot size | input | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 4) + "|"]
    predictors = {name: Predictor(checkpoint, backend="torch") for name, checkpoint in zip(names, args.checkpoints)}
    rows = {}  # (model, domain, scale, mode) -> table row
    # Each shrunk picture is made once (about 10 ms each) and scored by every model on its split that frames alike.
    def split_and_framing(p: Predictor) -> tuple[str, bool]:
        return validation_key(p.meta), p.settings.flatten_lightness

    for split, flatten in sorted({split_and_framing(p) for p in predictors.values()}):
        on_split = {n: p for n, p in predictors.items() if split_and_framing(p) == (split, flatten)}
        meta = next(iter(on_split.values())).meta
        for domain, (squares, targets) in framed_validation(CANVAS, meta, flatten).items():
            for scale in SCALES:
                images = pictures(squares, scale)
                size = "as it is" if scale == 1 else f"{scale:.0%} of the side"
                for name, predictor in on_split.items():
                    for mode in MODES:
                        row = scores(predictor, images, targets, mode)
                        values = [f"{row[c]:.3f}" if c == "balanced accuracy" else f"{row[c]:.1%}" for c in columns]
                        rows[name, domain, scale, mode] = (f"| {name} | {domain} ({len(squares)}) | {size} | {mode} | "
                                                           + " | ".join(values) + " |")
    lines += [rows[key] for key in sorted(rows, key=lambda k: (names.index(k[0]), k[1], -k[2], MODES.index(k[3])))]
    publish(lines, title="A small spot in a wide photo: does the answer hold?", module="bench.zoomed_out",
            doc=__doc__, results=RESULTS, args=args, names=names)


if __name__ == "__main__":
    main()
