"""Does the model look at the spot or at the marks beside it? `python -m bench.shortcuts [--checkpoints A B]`.

Some clinical sources carry marks on one class only: pen circles, case numbers
and rulers on the NCI atlas nevi, a grey caption bar on SD-198's vascular and
other photos. A network can learn "a ring of ink means a mole". This bench
takes every validation image, frames it as the predictor does, and scores the
framed square as it is and again with each of `data.augment.MARKS` drawn on
it (seeded per image, so every model sees the same marks). A model that looks
at the spot keeps its answer; one that learned the mark changes it.

The marks are the ones `--marks-p` draws in training, so this measures whether
training removed the shortcut for such marks; the real NCI rings and SD-198
bars differ in detail. Validation only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from bench.compare import framed_validation, parse_models, publish, validation_key
from data.datasets import CLASSES
from data.augment import MARKS
from data.presets import eval_preset
from model.decision import softmax
from model.predictor import Predictor

RESULTS = Path(__file__).with_name("shortcuts.md")
NEVUS, VASCULAR = CLASSES.index("nevus"), CLASSES.index("vascular")


def probabilities(predictor: Predictor, squares: list[np.ndarray]) -> np.ndarray:
    """Calibrated probabilities for framed squares, through the one eval preset with the checkpoint's settings
    (each square is its own frame)."""
    x = np.stack([eval_preset(s, predictor.settings, box=(0, 0, s.shape[1], s.shape[0]))[0] for s in squares])
    return np.concatenate([softmax(predictor.network(x[i : i + 256])[0], predictor.calibration.temperature)
                           for i in range(0, len(x), 256)])


def mark_effects(predictor: Predictor, squares: list[np.ndarray], targets: np.ndarray) -> dict[str, dict]:
    """Per mark: how often the answer (argmax) changes, how often a non-nevus turns nevus or a non-vascular
    image turns vascular, the mean change in p(nevus) on non-nevi, the share of non-vascular images over the
    decision rule's vascular bar (the answer "harmless red spot"), and the balanced accuracy without and with
    the mark on every image (with it, the mark tells nothing: what is left is reading the spot)."""
    plain = probabilities(predictor, squares)
    bar = predictor.calibration.vascular_min
    non_nevi, non_vascular = targets != NEVUS, targets != VASCULAR

    def over_the_bar(p: np.ndarray) -> float:
        return float(((p.argmax(1) == VASCULAR) & (p[:, VASCULAR] >= bar))[non_vascular].mean())

    effects = {}
    for k, (name, draw) in enumerate(MARKS.items()):
        marked = probabilities(predictor, [draw(s, np.random.default_rng([i, k])) for i, s in enumerate(squares)])
        before, after = plain.argmax(1), marked.argmax(1)
        effects[name] = {
            "answer changed": float((before != after).mean()),
            "non-nevi turned nevus": float(((after == NEVUS) & (before != NEVUS))[non_nevi].mean()),
            "turned vascular": float(((after == VASCULAR) & (before != VASCULAR))[non_vascular].mean()),
            "mean change in p(nevus), non-nevi": float((marked[:, NEVUS] - plain[:, NEVUS])[non_nevi].mean()),
            "non-vascular over the vascular bar: plain / marked": (over_the_bar(plain), over_the_bar(marked)),
            "balanced accuracy: plain / marked": (balanced_accuracy_score(targets, before),
                                                  balanced_accuracy_score(targets, after)),
        }
    return effects


def main(argv: list[str] | None = None) -> None:
    args, names = parse_models("python -m bench.shortcuts", __doc__, RESULTS, argv)

    columns = ("answer changed", "non-nevi turned nevus", "turned vascular", "mean change in p(nevus), non-nevi",
               "non-vascular over the vascular bar: plain / marked", "balanced accuracy: plain / marked")
    shown = {"mean change in p(nevus), non-nevi": "{:+.3f}".format,
             "non-vascular over the vascular bar: plain / marked": lambda v: f"{v[0]:.1%} / {v[1]:.1%}",
             "balanced accuracy: plain / marked": lambda v: f"{v[0]:.3f} / {v[1]:.3f}"}
    lines = ["| model | validation images | mark | " + " | ".join(columns) + " |", "|---" * (len(columns) + 3) + "|"]
    framed = {}  # (size, split, framing) -> framed validation: read and framed once for all models that share them
    for name, checkpoint in zip(names, args.checkpoints):
        predictor = Predictor(checkpoint, backend="torch")
        settings = predictor.settings
        key = (settings.size, validation_key(predictor.meta), settings.flatten_lightness)
        if key not in framed:
            framed[key] = framed_validation(settings.size, predictor.meta, settings.flatten_lightness)
        for domain, (squares, targets) in framed[key].items():
            for mark, row in mark_effects(predictor, squares, targets).items():
                values = [shown.get(c, "{:.1%}".format)(row[c]) for c in columns]
                lines.append(f"| {name} | {domain} ({len(squares)}) | {mark} | " + " | ".join(values) + " |")
    publish(lines, title="Shortcut marks: does the answer change?", module="bench.shortcuts", doc=__doc__,
            results=RESULTS, args=args, names=names)


if __name__ == "__main__":
    main()
