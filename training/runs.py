"""The run folder OUT: what a training run leaves there, what `--overwrite` replaces, and the state `--resume`
continues from (with the command that does so). Used by training and by `training.ensemble`, which writes a run of
its own."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch

from data.flags import UsageError
from data.splits import resolved_paths
from training.report import FIGURES

# Flags of the machine, not of the run: a resumed run takes them from its command line (or their defaults).
MACHINE_FLAGS = {"resume", "overwrite", "device", "workers", "decode_workers", "threads", "out"}


def resume_command(args: argparse.Namespace, named: set[str]) -> str:
    """The command that continues the run in `args.out`, with the machine's flags that were `named` on its command
    line: a resumed run takes them from there, not from last.pt, and on another device or number of threads it does
    not come out the same (a run on the GPU had been told to resume without --device, on the CPU)."""
    machine = sorted(named & (MACHINE_FLAGS - {"resume", "overwrite", "out"}))
    given = "".join(f" --{name.replace('_', '-')} {shlex.quote(str(getattr(args, name)))}" for name in machine)
    # --data given to a resumed run: its data had moved, and last.pt names where it was until an epoch is saved.
    data = " --data " + " ".join(map(shlex.quote, args.data)) if args.resume and "data" in named else ""
    return f"python -m training.train --out {shlex.quote(args.out)} --resume{data}{given}"


# Flags of the final steps: which weights are kept and how the decision rule is fitted.
REFIT_FLAGS = {"keep", "unsure_rate", "max_false_vascular", "ood_pass"}
# Flags a resumed run may change: they do not alter what is trained (the rest must match the interrupted run's).
# Resuming a finished run redoes only the final steps, so it can re-pick the weights and recalibrate.
RESUME_MAY_CHANGE = MACHINE_FLAGS | REFIT_FLAGS
# For a resumed run (or an average of runs) whose data folder is not where the checkpoint recorded it.
MOVED_ADVICE = "; if the data has moved, name its folders where they are now with --data, in the same order"
# What a run leaves in OUT: training's files, and training.evaluate's report on it (beside it, or in val/).
RUN_FILES = ("spotcheck.pt", "spotcheck.pt.sha256", "spotcheck.onnx", "spotcheck.json", "last.pt", "last.pt.sha256",
             "best.pt", "best.pt.sha256", "history.json")
REPORT_FILES = ("metrics.json", "MODEL_CARD.md", *FIGURES)


def run_report(out: Path) -> list[Path]:
    """training.evaluate's report on the model in `out`: out of date once that model is replaced or recalibrated."""
    return sorted(path for folder in (out, out / "val") for pattern in REPORT_FILES for path in folder.glob(pattern)
                  if path.is_file())


def previous_run(out: Path, overwrite: bool, *, resumable: bool = True) -> list[Path]:
    """The files of a run already in `out` (none: []; its report alone is not a run), to replace once the new run's
    data has been read (`replace_run`). Without `overwrite` a run there stops the command: it would be lost.
    `resumable`: the command can continue a run (training's --resume), if it left its last.pt; a finished run it
    would not train further (`finished_epochs`), and is not advised to be resumed."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot use --out {out}: it is a file")
    found = [out / name for name in RUN_FILES if (out / name).is_file()]
    if not found:
        return []
    found += run_report(out)
    if not overwrite:
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        epochs = finished_epochs(out) if resumable else None
        if epochs is not None:
            raise UsageError(f"{out} already holds a finished training run ({names}; all {epochs} of its "
                             "epochs trained): to train again, write into another --out, or replace it with "
                             "--overwrite (--resume trains nothing more in a finished run: it only picks the weights "
                             "and fits the decision rule again, e.g. with another --unsure-rate)")
        resume = "continue it with --resume, " if resumable and (out / "last.pt").is_file() else ""
        raise UsageError(f"{out} already holds a training run ({names}): {resume}write into another --out, or "
                         "replace it with --overwrite")
    return found


def finished_epochs(out: Path) -> int | None:
    """How many epochs the run in `out` trained, if it is finished: every epoch its last.pt was to train is done, and
    its model written (a run stopped after its last epoch is finished by --resume). None otherwise, and for a last.pt
    that cannot be read (--resume says why)."""
    if not (out / "spotcheck.pt").is_file() or not (out / "last.pt").is_file():
        return None
    try:
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        epochs = int(state["flags"]["epochs"])
        done = int(state["epoch"]) + 1
    except Exception:  # torch raises several kinds for a cut-off or foreign file
        return None
    return epochs if done >= epochs else None


def replace_run(out: Path, previous: list[Path]) -> None:
    """Make `out` (only now: a command refused earlier leaves no folder behind) and delete the files the new model
    makes out of date (`previous_run`, or a resumed run's `run_report`)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path in previous:
            path.unlink()
    except OSError as err:  # no permission
        raise UsageError(f"cannot use --out {out}: {err.strerror or err}")
    if previous:
        names = ", ".join(str(p.relative_to(out)) for p in previous[:4]) + (", ..." if len(previous) > 4 else "")
        print(f"removed {len(previous)} out-of-date files from {out} ({names})")


def refits_otherwise(state: dict, args: argparse.Namespace) -> bool:
    """Whether a resumed run picks its weights or fits its decision rule with settings other than last time's."""
    return any(state.get("flags", {}).get(k) != vars(args)[k] for k in REFIT_FLAGS)


def interrupted_run(out: Path, args: argparse.Namespace, named: set[str]) -> tuple[dict, argparse.Namespace]:
    """The state in OUT/last.pt to resume from, and the flags to resume with: those `named` on the command line, the
    rest as last.pt recorded them (the machine's flags aside). Refused if a named flag differs from the recorded
    one: the split, the schedule and the draws all follow from them."""
    if not out.is_dir():  # a slip in --out: starting "again without --resume" would train into it
        raise UsageError(f"nothing to resume in {out}: it {'is a file' if out.exists() else 'does not exist'}; "
                         "give --out the folder of the run to resume")
    if not (out / "last.pt").is_file():
        raise UsageError(f"nothing to resume in {out}: it holds no last.pt (written after each epoch, so a run "
                         "stopped during its first one leaves none): start the run again without --resume")
    try:
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for a cut-off or foreign file
        raise UsageError(f"{out / 'last.pt'} cannot be read ({type(err).__name__}: {str(err)[:200]}); it may "
                         "have been cut off: train into a new --out, or delete it to start again")
    recorded = {k: old for k, old in state.get("flags", {}).items() if k in vars(args) and k not in MACHINE_FLAGS}
    if "data" in recorded:  # a last.pt of older code may hold the folders as typed
        recorded["data"] = resolved_paths(recorded["data"])
    changed = {k: (old, vars(args)[k]) for k, old in recorded.items()
               if k in named and k not in RESUME_MAY_CHANGE and vars(args)[k] != old}
    if "data" in changed and "split_members" in state and \
            [Path(d).name for d in changed["data"][0]] == [Path(d).name for d in changed["data"][1]]:
        del changed["data"]  # the same folders moved: the recorded split is found by the images' names (recorded_splits)
    if changed:
        raise UsageError(f"{out / 'last.pt'} was trained with other settings; resume with the same flags (or "
                         "leave them out: last.pt has them), or train into a new --out: "
                         + ", ".join(f"--{k.replace('_', '-')} was {old}, now {new}" for k, (old, new) in changed.items()))
    return state, argparse.Namespace(**{**vars(args), **{k: v for k, v in recorded.items() if k not in named}})
