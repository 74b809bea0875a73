"""Average several training runs into one model: `python -m training.ensemble RUN/spotcheck.pt ... --out DIR`.

Two runs of one command differ by several hundredths (bench/README.md, "Run to run"); the average of their
logits (model.net.Ensemble) varies less. The members must be finished runs of one recipe on one split: the same
data, split seed, network, preprocessing and training flags, only `--run-seed` differing. The ensemble is then
finished as `training.train` finishes one run: out-of-distribution statistics from the training images, and
the temperature, vascular bar and unsure threshold fitted on validation, for the ensemble as a whole. The test
split is never touched here; score it with `python -m training.evaluate --checkpoint DIR/spotcheck.pt`.

Exit status 0 when the average is written; 2 when the command line is refused (members that cannot be read or are
not runs of one recipe on one split, a --data folder that is not there, an --out that holds another model);
130 when stopped (Ctrl+C or a `kill`); 1 for any other error (data that cannot be read).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from data.datasets import NoDataFolder, reading_problem
from data.flags import UsageError, fraction, named_path, positive_int, run_command
from data.splits import all_its_folders, model_splits, resolved_paths
from model.checkpoint import CheckpointError, network_from, read_checkpoint
from model.net import Ensemble
from training.loaders import decode_all
from training.runs import MOVED_ADVICE, RESUME_MAY_CHANGE, RUN_FILES, previous_run, replace_run
from training.train import inherited_record, parse_args as train_args, write_model

# Flags members may differ in: the run's own seed, and the flags that do not change what is trained.
MAY_DIFFER = RESUME_MAY_CHANGE | {"run_seed"}
TRAINING_DEFAULTS = vars(train_args([]))  # parsed once


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", nargs="+", type=named_path, help="the runs' finished checkpoints (spotcheck.pt), at least two")
    p.add_argument("--out", type=named_path, default="runs/ensemble", help="output folder (default: runs/ensemble)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model already in --out (its files and evaluation report), which is otherwise "
                        "refused")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--decode-workers", type=positive_int, default=TRAINING_DEFAULTS["decode_workers"],
                   help=f"as training's (default: {TRAINING_DEFAULTS['decode_workers']})")
    p.add_argument("--data", nargs="+", type=named_path, default=None,
                   help="the runs' data folders, where they lie on this machine (default: the folders the runs "
                        "recorded, on the machine that trained them)")
    unsure_rate, max_false_vascular, ood_pass = (TRAINING_DEFAULTS[k] for k in ("unsure_rate", "max_false_vascular",
                                                                                 "ood_pass"))
    p.add_argument("--unsure-rate", type=fraction, default=unsure_rate,
                   help=f"as training's (default: {unsure_rate}); the ensemble is calibrated afresh")
    p.add_argument("--max-false-vascular", type=fraction, default=max_false_vascular,
                   help=f"as training's (default: {max_false_vascular})")
    p.add_argument("--ood-pass", type=fraction, default=ood_pass, help=f"as training's (default: {ood_pass})")
    args = p.parse_args(argv)
    if len(args.members) < 2:
        p.error("an ensemble needs at least two members")
    args.data = args.data and resolved_paths(args.data)
    return args


def run_flags(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The training flags of a run. A flag it does not record is read as today's default: the run predates the
    flag, and every flag added since defaults to what training did before it. Its data folders as full paths (an
    older run recorded them as typed)."""
    flags = {**TRAINING_DEFAULTS, **checkpoint["meta"].get("flags", {})}
    return {**flags, "data": resolved_paths(flags["data"])}


def recipe_problem(checkpoints: list[dict[str, Any]]) -> str | None:
    """Why these checkpoints are not runs of one recipe on one split, or None when they are."""
    first, first_flags = checkpoints[0], run_flags(checkpoints[0])
    for i, other in enumerate(checkpoints[1:], start=2):
        for key in ("arch", "classes", "preprocess"):
            if other.get(key) != first.get(key):
                return f"member {i} differs from member 1 in {key}: {other.get(key)} vs {first.get(key)}"
        if other.get("members", 1) != 1 or first.get("members", 1) != 1:
            return "a member is itself an ensemble: list its runs instead"
        digests = [c["meta"].get("split_sha256") for c in (first, other)]
        if None not in digests and digests[0] != digests[1]:  # e.g. trained before and after the grouping changed
            return (f"member {i} was trained on another split than member 1 (other data, other flags or other "
                    "splitting code)")
        flags = run_flags(other)
        differ = sorted(k for k in flags.keys() | first_flags.keys()
                        if k not in MAY_DIFFER and flags.get(k) != first_flags.get(k))
        if differ:
            return (f"member {i} was trained with other flags than member 1 (only --run-seed may differ): "
                    + ", ".join(f"--{k.replace('_', '-')} {flags.get(k)} vs {first_flags.get(k)}" for k in differ))
    return None


def member_summary(checkpoint: dict[str, Any], digest: str) -> dict[str, Any]:
    """What the ensemble's metadata keeps of one member."""
    meta = checkpoint["meta"]
    flags = meta.get("flags", {})
    run_seed = flags.get("run_seed") if flags.get("run_seed") is not None else flags.get("seed")  # None: --seed's
    return {"checkpoint_sha256": digest, "run_seed": run_seed, "kept": meta.get("kept"),
            "best_epoch": meta.get("best_epoch"), "best_weights": meta.get("best_weights"),
            "validation_score": meta.get("validation", {}).get("score"),
            "train_minutes": meta.get("train_minutes"), "code_version": meta.get("code_version")}


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    paths = [Path(p) for p in args.members]
    # Asked first: the refusal of a model already there had advised --overwrite, which this then refused.
    if {path.resolve() for path in paths} & {(Path(args.out) / name).resolve() for name in RUN_FILES}:
        raise UsageError(f"a member is part of the model in {args.out}, which the average would replace: "
                         "write the average into another --out")
    replaced = previous_run(Path(args.out), args.overwrite, resumable=False)
    try:
        checkpoints, digests = zip(*(read_checkpoint(p) for p in paths))
    except CheckpointError as err:
        raise UsageError(str(err))
    problem = recipe_problem(checkpoints)
    if problem:
        raise UsageError(problem)
    members = [member_summary(c, digest) for c, digest in zip(checkpoints, digests)]
    seeds = [m["run_seed"] for m in members]
    if len({m["checkpoint_sha256"] for m in members}) < len(members) or len(set(seeds)) < len(seeds):
        raise UsageError(f"the same run is listed twice (run seeds {seeds}): a run averaged with itself is "
                         "that run; train the others with --run-seed 1, 2, ...")
    torch.set_num_threads(args.threads)
    model = Ensemble([network_from(c) for c in checkpoints])

    # The members' recipe, with this command's output folder, threads and calibration settings (members may have
    # been recalibrated with others), and every member's run seed.
    recipe = argparse.Namespace(**{**run_flags(checkpoints[0]), "out": args.out, "overwrite": args.overwrite,
                                   "resume": False, "threads": args.threads, "decode_workers": args.decode_workers,
                                   "unsure_rate": args.unsure_rate, "max_false_vascular": args.max_false_vascular,
                                   "ood_pass": args.ood_pass, "run_seed": seeds})
    try:
        if args.data:
            if not all_its_folders(checkpoints[0]["meta"], args.data):
                raise UsageError(f"--data {' '.join(args.data)}: not the folders the runs were trained on "
                                 f"({' '.join(recipe.data)}), all of them")
            recipe.data = args.data
        splits = model_splits(checkpoints[0]["meta"], recipe.data)
    except NoDataFolder as err:  # a slip in --data, or the runs' folders moved
        raise UsageError(f"{err}{'' if args.data else MOVED_ADVICE}")
    except (OSError, ValueError) as err:  # an unreadable data folder, too few images
        raise SystemExit(f"error: {reading_problem(err)}")
    val_pixels, val_samples = decode_all(splits["val"], recipe.image_size, workers=recipe.decode_workers,
                                         desc="decode val", flatten_lightness=recipe.flatten_lightness)
    if not val_samples:
        raise SystemExit("error: none of the validation images can be read (the warning above says why)")
    replace_run(Path(args.out), replaced)  # only now that the data is there
    # No "validation" here: write_model scores the finished weights on validation as it calibrates them.
    meta = {"kept": "ensemble", "members": members,
            "train_minutes": round(sum(m["train_minutes"] or 0 for m in members), 1)}
    inherited = inherited_record(checkpoints[0]["meta"])  # runs fine-tuned from one model: its record
    return write_model(model, recipe, splits, splits["train"], val_pixels, val_samples, meta, inherited)


if __name__ == "__main__":
    run_command(main)
