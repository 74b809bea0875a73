"""What each part of the domain-gap work buys, on the validation splits: `python -m bench.ablation`.

Trains one run per variant of SpotNet from scratch (the network before LiteNet)
with `python -m training.train` (same seed, split and budget; only the named
flags differ) and prints, for each run's best epoch, the dermoscopic and
clinical validation scores and the gap between them:

    ham-only       dermoscopic images only, no phone-photo augmentation ("before")
    +clinicalize   dermoscopic images made to look like phone photos
    +clinical      real clinical photos in 30% of the draws, no augmentation to clinical look
    full           both (SpotNet's shipped recipe; LiteNet's starts from ImageNet weights)
    full+dx        both, plus an auxiliary head learning the 7 HAM10000 diagnoses
                   (the 3-groups-vs-7-diagnoses question)
    full+clin50    both, with clinical photos in half of the draws instead of 30%
    full+constancy both, with shades-of-grey colour constancy (p = 6) on every input,
                   at training and prediction time
    full+marks-all both, with pen circles, ink writing, rulers and caption bars drawn on
                   30% of all training images of every class
    full+marks     both, with such marks drawn on half of the clinical training photos of
                   every class, none on dermoscopy (`--marks-p 0.5`)
    full+zoom      both, with 30% of the dermoscopic draws shrunk onto a wider surround of
                   skin (`--zoom-out-p 0.3`), no marks
    full+marks+zoom  both, with the marks of full+marks and the zoom-out of full+zoom

Each variant's summary is kept in ablation.json, so one variant can be (re)run
without the others; ablation.md is written from all of them.

All variants train raw weights (`--ema 0`): the moving average of the shipped
recipe only matters late in a full-length run, and this keeps the stored runs
reproducible.

Framing (finding and cropping the spot) acts at prediction time, so it is
measured on the shipped model instead: clinical validation photos framed vs
the whole photo squashed to the model's input.

Validation only: the test split is never used to compare recipes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from data.datasets import CLASSES

# The stored rows (ablation.json) are SpotNet runs from scratch, measured before LiteNet became the default network
# (commit c0f995d). SpotNet's recipe is pinned, so that rerunning one variant adds a row comparable with the others.
SPOTNET = ["--arch", "spotnet", "--lr", "3e-3"]
NO_MARKS = ["--marks-p", "0"]  # explicit: these variants were measured before the shortcut marks existed
VARIANTS = {
    "ham-only": ["--clinical-share", "0", "--clinicalize-p", "0", *NO_MARKS],
    "+clinicalize": ["--clinical-share", "0", *NO_MARKS],
    "+clinical": ["--clinicalize-p", "0", *NO_MARKS],
    "full": NO_MARKS,
    "full+dx": ["--dx-weight", "0.5", *NO_MARKS],
    "full+clin50": ["--clinical-share", "0.5", *NO_MARKS],
    "full+constancy": ["--colour-constancy", "6", *NO_MARKS],
    "full+marks-all": ["--marks-p", "0.3", "--marks-p-dermoscopy", "0.3"],
    "full+marks": ["--marks-p", "0.5", "--marks-p-dermoscopy", "0"],
    "full+zoom": ["--zoom-out-p", "0.3", *NO_MARKS],
    "full+marks+zoom": ["--marks-p", "0.5", "--zoom-out-p", "0.3"],
}
RESULTS = Path(__file__).with_name("ablation.md")
SUMMARIES = Path(__file__).with_name("ablation.json")
COLUMNS = ("dermoscopy_balanced_accuracy", "clinical_balanced_accuracy", "dermoscopy_vascular_recall",
           "clinical_vascular_recall")


def train(name: str, flags: list[str], out: Path, epochs: int) -> list[dict]:
    """Train one variant (skipped when finished, resumed when interrupted) and return its per-epoch history."""
    history_path = out / name / "history.json"
    if not (out / name / "spotcheck.pt").is_file():
        command = [sys.executable, "-m", "training.train", "--out", str(out / name), "--epochs", str(epochs), "--resume",
                   "--ema", "0", *SPOTNET, *flags]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads(history_path.read_text())


def framing_effect(checkpoint: str | None) -> dict[str, float]:
    """Clinical validation balanced accuracy of one model with and without framing the spot, on the model's own
    validation split (a split rebuilt here could hold photos it was trained on)."""
    from sklearn.metrics import balanced_accuracy_score

    from data.datasets import DEFAULT_DATA
    from data.images import ImageError, read_image
    from data.splits import model_splits
    from model.predictor import Predictor

    predictor = Predictor(checkpoint)
    val = [s for s in model_splits(predictor.meta, DEFAULT_DATA)["val"] if s.domain == "clinical"]
    targets, framed, whole = [], [], []
    for sample in val:
        try:
            image = read_image(sample.path)
        except ImageError as err:
            print(f"warning: skipped {sample.path}: {err}")
            continue
        photo = (0, 0, image.shape[1], image.shape[0])
        targets.append(sample.target)
        framed.append(predictor.prepare(image))
        whole.append(predictor.prepare(image, box=photo))
    scores = {}
    for mode, prepared in (("framed", framed), ("whole photo", whole)):
        predictions = predictor.classify(prepared)
        top = [CLASSES.index(p.top) for p in predictions]
        scores[mode] = float(balanced_accuracy_score(targets, top))
    print(f"framing: {len(targets)} clinical validation photos")
    return scores


def summary(history: list[dict]) -> dict[str, float]:
    """The best epoch's validation figures, and the mean of the last three epochs (steadier than one epoch)."""
    best = max(history, key=lambda r: r["score"])
    return {"epochs": len(history), "best_epoch": best["epoch"] + 1, **{k: best[k] for k in COLUMNS},
            **{f"last3_{k}": float(np.mean([r[k] for r in history[-3:]])) for k in COLUMNS[:2]}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run (default: 10, the budget of the stored rows)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                   help="variants to train (a finished run is read, not retrained); none: the table is rewritten "
                        "from ablation.json and only the framing is measured again (default: all)")
    p.add_argument("--checkpoint", default=None, help="model for the framing comparison (default: the embedded one)")
    args = p.parse_args(argv)

    summaries = json.loads(SUMMARIES.read_text()) if SUMMARIES.is_file() else {}
    for name in args.variants:
        summaries[name] = summary(train(name, VARIANTS[name], Path(args.out), args.epochs))
    SUMMARIES.write_text(json.dumps(summaries, indent=1) + "\n")
    lines = ["SpotNet from scratch. Validation, best epoch (balanced accuracy; vascular recall is argmax). The last "
             "column averages the last three epochs, which is steadier than one best epoch.", "",
             "| variant | epochs | best epoch | dermoscopy bal. acc. | clinical bal. acc. | gap | dermoscopy vasc. recall "
             "| clinical vasc. recall | last 3 epochs: dermoscopy / clinical |", "|---|---|---|---|---|---|---|---|---|"]
    for name in (n for n in VARIANTS if n in summaries):
        r = summaries[name]
        d, c, dv, cv = (r[k] for k in COLUMNS)
        lines.append(f"| {name} | {r['epochs']} | {r['best_epoch']} | {d:.3f} | {c:.3f} | {d - c:+.3f} | {dv:.2f} "
                     f"| {cv:.2f} | {r['last3_' + COLUMNS[0]]:.3f} / {r['last3_' + COLUMNS[1]]:.3f} |")
    model = args.checkpoint or "the embedded model"
    lines += ["", f"Framing at prediction time ({model}, clinical validation)", "",
              "| input | clinical bal. acc. |", "|---|---|"]
    lines += [f"| {mode} | {score:.3f} |" for mode, score in framing_effect(args.checkpoint).items()]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(f"# Ablation: what each part buys\n\n`python -m bench.ablation` (summaries in {SUMMARIES.name})"
                       f"\n\n{text}")


if __name__ == "__main__":
    main()
