"""Score a checkpoint on the held-out test split: `python -m training.evaluate [--checkpoint PATH]`.

Finds the split the checkpoint recorded (or rebuilds it from its seed), runs
every test image through `model.predictor.Predictor` (the same path the app
and batch scoring use), and writes to `--out`:

- metrics.json: per domain (dermoscopy such as HAM10000; clinical photos), per-class
  precision/recall, balanced accuracy, ROC AUC, confusion matrices, ECE, the
  decision rule's coverage and safety rates, and 95% bootstrap intervals
  resampled by lesion; null where a figure is undefined (the recall of a class
  with no images, the precision of one never predicted; "n/a" in the card);
- confusion_<domain>.png, roc_<domain>.png, reliability_<domain>.png;
- MODEL_CARD.md.

`--data FOLDER --split all --out DIR` scores every image of labelled folders the
model was not trained on, such as a clinic's own photos (in a class-per-folder
tree of phone photos: add `--folder-domain clinical`).

Exit status 0 when the report is written; 2 when the command line is refused, a `--data` folder is not there, or
`--checkpoint` is missing or cannot be used (as for `serve.batch` and `model.export`); 130 when stopped (Ctrl+C or
a `kill`: the report it found is replaced only once every figure is worked out); 1 for any other error.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.datasets import CLASSES, DEFAULT_DATA, DOMAINS, NoDataFolder, Sample, load_dataset, reading_problem
from data.flags import UsageError, named_path, report_refusal, run_command, write_problem
from data.identity import is_seen
from data.splits import (all_its_folders, at_recorded_path, class_counts, legacy_names, model_splits,
                         split_digest, trained_folder_domain, trained_on, tree_note)
from model.checkpoint import DEFAULT_CHECKPOINT, CheckpointError
from model.export import plain
from model.predictor import Predictor
from training.metrics import balanced_accuracy, full_report
from training.report import FIGURES, as_text, plot_confusion, plot_reliability, plot_roc, write_model_card


def predict_samples(predictor: Predictor, samples: list[Sample], batch_size: int = 64,
                    workers: int = 2) -> tuple[list[Sample], np.ndarray, list[str]]:
    """Calibrated probabilities and decided labels for each readable sample, read in `workers` threads."""
    kept, probs, decided = [], [], []
    answers = predictor.predict_files([s.path for s in samples], batch_size=batch_size, workers=workers)
    for sample, (path, answer) in zip(samples, tqdm(answers, total=len(samples), desc="test", disable=None)):
        if isinstance(answer, str):  # the reason it cannot be used
            print(f"warning: skipped {path}: {answer}", file=sys.stderr)
            continue
        kept.append(sample)
        probs.append([answer.probabilities[c] for c in CLASSES])
        decided.append(answer.label)
    return kept, np.array(probs), decided


def bootstrap_intervals(samples: list[Sample], probs: np.ndarray, decided: list[str],
                        rounds: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """95% intervals, resampling whole lesions (groups) with replacement."""
    groups = sorted({s.group for s in samples})
    members = {g: [] for g in groups}
    for i, s in enumerate(samples):
        members[s.group].append(i)
    targets = np.array([s.target for s in samples])
    truth = np.array([s.label for s in samples])
    decided = np.asarray(decided)
    rng = np.random.default_rng(seed)
    values = {"balanced_accuracy": [], "vascular_recall_with_rule": [], "nonvascular_called_vascular": []}
    for _ in range(rounds):
        idx = np.concatenate([members[groups[g]] for g in rng.integers(0, len(groups), len(groups))])
        t, p, d, tr = targets[idx], probs[idx], decided[idx], truth[idx]
        if len(set(t.tolist())) < len(CLASSES):
            continue
        values["balanced_accuracy"].append(balanced_accuracy(t, p.argmax(1)))
        values["vascular_recall_with_rule"].append((d[tr == "vascular"] == "vascular").mean())
        values["nonvascular_called_vascular"].append((d[tr != "vascular"] == "vascular").mean())
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in values.items() if v}


def split_problem(meta: dict, split: str, samples: list[Sample]) -> str | None:
    """Why `samples`, the split found in the folders the model was trained on, is not the split it was trained
    with (images added, removed or relabelled, or, for a checkpoint that does not record its split's members, the
    grouping changed since), or None. Older checkpoints record only counts."""
    recorded = meta.get("split_sha256", {}).get(split)
    if recorded is not None:
        same = recorded == split_digest(samples, legacy=legacy_names(meta))
    else:
        counts = meta.get("split_counts", {}).get(split)
        same = counts is None or counts == class_counts(samples)
    if same:
        return None
    return (f"the {split} split rebuilt from {' '.join(meta['data'])} is not the one this model was trained with "
            "(images were added or removed, or the splitting code changed): it may hold images the model was trained "
            "on, and its figures would be too good. Evaluate with the data and code it was trained with, or retrain")


def unseen_images(meta: dict, roots: list[str], folder_domain: str) -> tuple[list[Sample], int]:
    """Every image in `roots` the model has not seen, for `--split all`, and how many were left out as seen: the
    same file or ISIC image as one of its data, under any name (`data.identity`). UsageError for one of its own
    folders: at a path it recorded, or anywhere with nothing in it that it has not seen."""
    seen = set(meta.get("seen_images", []))
    images = {root: [(s, is_seen(s.path, seen)) for s in load_dataset(root, folder_domain)] for root in roots}
    for root, pairs in images.items():
        if note := tree_note([s for s, _ in pairs]):
            print(f"{root}{note}")
    own = [root for root in images if at_recorded_path(meta, root)]
    if own:
        raise UsageError(f"the model was trained on the images in {' '.join(own)}: --split all would score "
                         "images it has seen; score its test split instead (leave out --split)")
    copies = [root for root, pairs in images.items() if all(was_seen for _, was_seen in pairs)]
    if copies:
        raise UsageError(f"every image in {' '.join(copies)} is one the model has seen (the same file, or the "
                         "same ISIC image, as one of its training, validation or test images, under another name): "
                         "--split all has nothing new to score there; to score the model's own test split, leave "
                         "out --split")
    everything = [pair for pairs in images.values() for pair in pairs]
    unseen = [s for s, was_seen in everything if not was_seen]
    if len(unseen) < len(everything):
        print(f"left out {len(everything) - len(unseen)} of {len(everything)} images the model has seen: the same "
              "file, or the same ISIC image, as one of its training, validation or test images, under another name")
    return unseen, len(everything) - len(unseen)


def seen_warning(meta: dict, split: str, samples: list[Sample]) -> str | None:
    """For a split of folders the model was not trained on: how many of its images the model has seen, the same
    file or ISIC image under any name (`data.identity`); for an older checkpoint, which records no keys, that it
    may have seen some. None when it has seen none."""
    if "seen_images" not in meta:
        return (f"the model was trained on {' '.join(meta['data'])}; the {split} split of other folders may hold "
                "images it was trained on, and its figures would then be too good")
    seen = set(meta["seen_images"])
    count = sum(is_seen(s.path, seen) for s in samples)
    return (f"the model has seen {count} of the {len(samples)} images of this {split} split (the same file or ISIC "
            "image, under any name): its figures would be too good" if count else None)


def data_folders(meta: dict) -> list[str]:
    """Where the model's data lies on this machine: the folders its checkpoint recorded, if they all exist here;
    else, for a model of HAM10000 and the clinical set alone (the shipped one, trained on another machine), their
    place beside the repository. UsageError for folders of one's own that are not here: they cannot be guessed."""
    folders = [str(d) for d in meta.get("data", [])]
    if folders and all(Path(d).is_dir() for d in folders):
        return folders
    if set(meta.get("sources", [])) <= {"ham10000", "clinical"}:
        return DEFAULT_DATA
    raise UsageError(f"the folders the model was trained on ({' '.join(folders) or 'its checkpoint names none'}) "
                     "are not all on this machine: give them with --data")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=named_path, default=str(DEFAULT_CHECKPOINT), help="default: the shipped model")
    parser.add_argument("--data", nargs="+", type=named_path, default=None,
                        help="the data folders the model was trained on, or with --split all labelled folders it has "
                             "not seen (default: those recorded in the checkpoint, "
                             f"where they exist; else, for HAM10000 and the clinical set, {' '.join(DEFAULT_DATA)})")
    parser.add_argument("--out", type=named_path, default=None,
                        help="output folder (default: beside the checkpoint, so for the shipped model the committed "
                             "report in model/weights/ is rewritten; for --split val, its val/ subfolder; needed "
                             "for folders the model was not trained on)")
    parser.add_argument("--split", default="test", choices=["val", "test", "all"],
                        help="default: test; all: every image of --data, labelled folders the model was not trained "
                             "on (needs --out)")
    parser.add_argument("--folder-domain", choices=DOMAINS, default=None,
                        help="what the photos of class-per-folder trees are: 'dermoscopy' or 'clinical' (ordinary "
                             "camera or phone photos), each reported apart (default: what the model took its own "
                             "trees to be; dermoscopy for the shipped model)")
    return parser


def samples_to_score(args: argparse.Namespace, predictor: Predictor) -> tuple[list[str], list[Sample], int]:
    """The data folders, the images to score in them, and how many were left out as seen (`--split all`)."""
    data = args.data or data_folders(predictor.meta)
    folder_domain = args.folder_domain or trained_folder_domain(predictor.meta)
    try:  # a missing or unreadable folder, no images in it, too few to split: OSError, ValueError
        if args.split != "all" and folder_domain != trained_folder_domain(predictor.meta) and \
                all(trained_on(predictor.meta, root) for root in data):  # its own split, relabelled: refused
            raise UsageError(f"--folder-domain {folder_domain}: the model was trained taking the photos of "
                             f"these folders' class trees as {trained_folder_domain(predictor.meta)}, and its "
                             f"{args.split} split is scored as it was trained: leave --folder-domain out (it is for "
                             "--split all on folders the model was not trained on)")
        trained_here = all_its_folders(predictor.meta, data)  # the report beside the checkpoint is of those
        if not trained_here and args.out is None:
            raise UsageError("these are not the folders the model was trained on: name a folder for their "
                             "report with --out (for the shipped model, the report beside it is the committed one)")
        if args.split == "all":
            samples, left_out = unseen_images(predictor.meta, data, folder_domain)
        else:
            samples, left_out = model_splits(predictor.meta, data, folder_domain)[args.split], 0
            # Other folders: their split was rebuilt from the seed (asked only when they are not all its folders).
            if not trained_here and not all(trained_on(predictor.meta, root) for root in data) and \
                    (seen := seen_warning(predictor.meta, args.split, samples)):
                print(f"warning: {seen} (for labelled photos it has never seen, score them all: --split all)", file=sys.stderr)
    except NoDataFolder as err:  # a slip in --data
        raise UsageError(str(err))
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {reading_problem(err)}")
    if trained_here and (problem := split_problem(predictor.meta, args.split, samples)):
        raise SystemExit(f"error: {problem}")
    return data, samples, left_out


def print_summary(metrics: dict) -> None:
    """One line per domain: the headline figures of `metrics`."""
    for domain, report in metrics["domains"].items():
        rule = report["with_decision_rule"]
        print(f"{domain}: n={report['images']} {report['class_counts']} "
              f"balanced_acc={as_text(report['argmax']['balanced_accuracy'])} "
              f"vascular_recall={as_text(report['argmax']['per_class']['vascular']['recall'])} "
              f"ece={as_text(report['ece_15_bins'])} | rule: coverage={as_text(rule['coverage'])} "
              f"vascular_recall={as_text(rule['vascular_recall'])} "
              f"vascular_precision={as_text(rule['vascular_precision'])} "
              f"nonvascular->vascular={as_text(rule['nonvascular_called_vascular'], 4)} "
              f"melanoma->vascular={as_text(rule['melanoma_called_vascular'], 4)} "
              f"malignant->vascular={as_text(rule['malignant_called_vascular'], 4)}")


def write_report(out: Path, metrics: dict, meta: dict, probs: np.ndarray, samples: list[Sample]) -> None:
    """Replace the report in `out` with `metrics`: the figures of each domain, metrics.json and the model card. (An
    evaluation stopped before this had deleted the pictures and kept the old metrics.json and card.)"""
    for old in (path for pattern in FIGURES for path in out.glob(pattern)):  # e.g. a domain an earlier run had
        old.unlink()
    domains = np.array([s.domain for s in samples])
    for domain in metrics["domains"]:
        part = np.flatnonzero(domains == domain)
        targets = np.array([samples[i].target for i in part])
        title = f"{domain} {'all images' if metrics['split'] == 'all' else metrics['split']}"
        plot_confusion(metrics["domains"][domain], out / f"confusion_{domain}.png", title=title)
        plot_roc(probs[part], targets, out / f"roc_{domain}.png", title=title)
        plot_reliability(probs[part], targets, out / f"reliability_{domain}.png", title=title)
    (out / "metrics.json").write_text(json.dumps(plain(metrics), indent=2, allow_nan=False))
    write_model_card(meta, metrics, out / "MODEL_CARD.md")


def main(argv: list[str] | None = None) -> dict:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.split == "all" and (args.data is None or args.out is None):
        parser.error("--split all scores folders the model was not trained on: name them with --data, and the "
                     "report's folder with --out")

    try:
        predictor = Predictor(args.checkpoint)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")  # a bad argument: exit 2, as batch scoring and the export do
    try:
        data, samples, left_out = samples_to_score(args, predictor)
    except UsageError as err:
        report_refusal(err)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / ("val" if args.split == "val" else "")
    try:  # before the scoring: a report that cannot be written had failed only after it, with a traceback
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        parser.exit(2, f"error: cannot write the report into {out}: {write_problem(err)}\n")
    samples, probs, decided = predict_samples(predictor, samples)
    # The checkpoint by name and content, not by path: the report stays the same wherever the repository lives.
    metrics = {"checkpoint": Path(args.checkpoint).name, "checkpoint_sha256": predictor.checkpoint_sha256,
               "split": args.split, **({"data": data, "left_out_as_seen": left_out} if args.split == "all" else {}),
               "calibration": vars(predictor.calibration),
               "ood": ({"layer": predictor.ood_layer, "features": int(predictor.feature_distance.means.shape[1])}
                       if predictor.feature_distance else None),
               "domains": {}}
    domains = np.array([s.domain for s in samples])
    parts = {domain: np.flatnonzero(domains == domain) for domain in sorted(set(domains))}
    for domain, part in parts.items():
        sub = [samples[i] for i in part]
        report = full_report(probs[part], np.array([s.target for s in sub]), [decided[i] for i in part],
                             [s.detail for s in sub])
        report["bootstrap_95ci_by_lesion"] = bootstrap_intervals(sub, probs[part], [decided[i] for i in part])
        metrics["domains"][domain] = report
    try:  # only now, every figure worked out: a run stopped before leaves the report it found whole
        write_report(out, metrics, predictor.meta, probs, samples)
    except OSError as err:  # a full disk
        parser.exit(1, f"error: cannot write the report into {out}: {err.strerror or err} (it may be incomplete)\n")
    print_summary(metrics)
    print(f"wrote {out / 'metrics.json'} and {out / 'MODEL_CARD.md'}")
    return metrics


if __name__ == "__main__":
    run_command(main)
