"""Are photos that are not skin spots refused? `python -m bench.ood [--checkpoint PATH] [--write]`.

Issue #3 asks that photos of text, a landscape or a face seen from afar come out
`unsure`. The strangers here are the photos that come with the installed
packages: scikit-learn's `china.jpg` (a temple among trees) and `flower.jpg`,
matplotlib's portrait of Grace Hopper, a gift box and its logo, each whole and
as four quarters; the portrait shrunk onto walls of six colours (a face from
afar); and a drawn page of text and landscape. None is a skin photo, and none
is stored in this repository.

1. What the predictor answers each stranger: `Predictor.predict`, the app's path.
2. Which layer the out-of-distribution distance should measure. For the end of
   each stage of the network, a `FeatureDistance` is fitted on the training
   images' pooled features at that layer, with its bar where 99.5% of
   validation images stay under it (as training fits them). Per layer: the
   strangers that pass the photo checks and that the distance refuses, how
   well it ranks them apart from the test images (ROC AUC), the test images it
   lets through per domain, and the clinical test photos left `unsure` by all
   reasons together with the checkpoint's other settings.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib import cbook
from sklearn.datasets import load_sample_images
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from data.datasets import CLASSES, DEFAULT_DATA, Sample
from data.images import read_image
from data.splits import model_splits
from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, network_from
from model.decision import UNSURE, Calibration, decide, softmax
from model.net import Ensemble
from model.predictor import Predictor
from training.calibrate import fit_feature_distance

RESULTS = Path(__file__).with_name("ood.md")


def landscape() -> np.ndarray:
    image = np.zeros((300, 400, 3), np.uint8)
    image[:150] = (110, 160, 230)  # sky
    image[150:] = (60, 140, 50)  # grass
    return np.clip(image + np.random.default_rng(0).normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def text_page() -> np.ndarray:
    page = np.full((800, 600, 3), (242, 240, 232), np.uint8)
    for line in range(20):
        cv2.putText(page, "The quick brown fox jumps over", (20, 40 + line * 38), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                    (30, 30, 30), 2, cv2.LINE_AA)
    return page


@functools.cache
def portrait() -> np.ndarray:
    """matplotlib's sample photo of Grace Hopper (512 x 600), decoded once (read-only: every face shares it)."""
    image = read_image(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    image.flags.writeable = False
    return image


def face_from_afar(wall: tuple[int, int, int], scale: float = 0.25) -> np.ndarray:
    """The portrait shrunk to `scale`, on a plain wall of colour `wall`."""
    small = cv2.resize(portrait(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    scene = np.clip(np.random.default_rng(0).normal(wall, 5, (900, 1200, 3)), 0, 255).astype(np.uint8)
    (h, w), top, left = small.shape[:2], 300, 400
    scene[top : top + h, left : left + w] = small
    return scene


WALLS = {"beige": (200, 190, 170), "peach": (225, 190, 160), "tan": (180, 140, 110), "brown": (120, 90, 70),
         "blue": (90, 110, 140), "grey": (150, 150, 150)}


def strangers() -> dict[str, np.ndarray]:
    """Photos that are not skin spots, by name (RGB uint8)."""
    photos = dict(zip(("china", "flower"), load_sample_images().images))
    photos["portrait"] = portrait()
    for name, file in (("gift box", "Minduka_Present_Blue_Pack.png"), ("logo", "logo2.png")):
        photos[name] = read_image(Path(cbook.get_sample_data(file, asfileobj=False)))
    found = {}
    for name, image in photos.items():
        found[name] = image
        h, w = image.shape[:2]
        for i, (top, left) in enumerate(((0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2))):
            found[f"{name}, quarter {i + 1}"] = np.ascontiguousarray(image[top : top + h // 2, left : left + w // 2])
    for wall, colour in WALLS.items():
        for scale in (0.25, 0.15):
            found[f"face at {scale:.0%} on a {wall} wall"] = face_from_afar(colour, scale)
    found["page of text"], found["drawn landscape"] = text_page(), landscape()
    return found


def stage_ends(features: torch.nn.Sequential, size: int) -> list[tuple[int, int]]:
    """(block index, channels) of each block after which the channel count changes: the end of each stage."""
    x, widths = torch.zeros(1, 3, size, size), []
    with torch.no_grad():
        for block in features:
            x = block(x)
            widths.append(x.shape[1])
    return [(i, c) for i, c in enumerate(widths) if i == len(widths) - 1 or widths[i + 1] != c]


@torch.no_grad()
def network_outputs(net: torch.nn.Module, inputs: np.ndarray, layers: list[int]) -> tuple[np.ndarray, dict]:
    """The logits, and the pooled output of each block in `layers`, for eval-preset inputs."""
    taps: dict[int, list] = {i: [] for i in layers}
    hooks = [net.features[i].register_forward_hook(lambda m, a, out, i=i: taps[i].append(out.mean(dim=(2, 3)).numpy()))
             for i in layers]
    try:
        logits = np.concatenate([net(torch.from_numpy(inputs[start : start + 256])).numpy()
                                 for start in range(0, len(inputs), 256)])
    finally:
        for hook in hooks:
            hook.remove()
    return logits, {i: np.concatenate(t) for i, t in taps.items()}


def prepared_split(predictor: Predictor, samples: list[Sample]) -> tuple[np.ndarray, list[Sample], list[str | None]]:
    """Eval-preset inputs, the samples read and each one's photo problem (None: usable)."""
    inputs, kept, problems = [], [], []
    prepared = predictor.prepare_files([s.path for s in samples], workers=2)
    for sample, (_, item) in zip(samples, tqdm(prepared, total=len(samples), desc="prepare", leave=False,
                                               disable=None)):
        if isinstance(item, str):  # unreadable: left out
            continue
        inputs.append(item.input)
        kept.append(sample)
        problems.append(item.problem)
    return np.stack(inputs), kept, problems


def unsure_share(logits: np.ndarray, distances: np.ndarray, problems: list, cal: Calibration) -> float:
    probs = softmax(logits, cal.temperature)
    return float(np.mean([decide(p, float(d), CLASSES, cal, problem)[0] == UNSURE
                          for p, d, problem in zip(probs, distances, problems)]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    p.add_argument("--write", action="store_true", help=f"also write the tables to {RESULTS.name}")
    args = p.parse_args(argv)
    net = network_from(load_checkpoint(args.checkpoint))
    if isinstance(net, Ensemble):
        raise SystemExit("error: bench.ood compares the layers of one network; give it one of the ensemble's runs")
    predictor = Predictor(args.checkpoint, backend="torch")
    lines = [f"Checkpoint `{Path(args.checkpoint).name}` ({predictor.meta.get('code_version', '?')}); "
             f"its distance bar: {predictor.calibration.ood_distance_max:.0f}.", "",
             "| stranger | answer | reason |", "|---|---|---|"]
    photos = strangers()
    prepared = {name: predictor.prepare(image) for name, image in photos.items()}
    results = predictor.classify(list(prepared.values()))
    lines += [f"| {name} | {result.label} | {result.reason} |" for name, result in zip(photos, results)]
    answered = sum(result.label != UNSURE for result in results)
    lines += ["", f"{answered} of {len(photos)} strangers answered with a class.", ""]

    splits = model_splits(predictor.meta, args.data)
    layers = stage_ends(net.features, predictor.settings.size)
    indices = [i for i, _ in layers]
    usable = [name for name, prep in prepared.items() if not prep.problem]
    stranger_features = network_outputs(net, np.stack([prepared[n].input for n in usable]), indices)[1]
    parts = {}
    for name in ("train", "val", "test"):
        inputs, samples, problems = prepared_split(predictor, splits[name])
        logits, features = network_outputs(net, inputs, indices)
        parts[name] = (features, samples, problems, logits)
    train_features, train_samples = parts["train"][0], parts["train"][1]
    groups = np.array([f"{s.domain} {s.label}" for s in train_samples])
    test_features, test_samples, test_problems, test_logits = parts["test"]
    domains = np.array([s.domain for s in test_samples])
    clinical = domains == "clinical"
    stored = net.ood_layer % len(net.features)
    lines += [f"The {len(usable)} strangers that pass the photo checks, against the test split "
              f"({(~clinical).sum()} dermoscopic, {clinical.sum()} clinical images):", "",
              "| layer (block, channels) | strangers refused | ROC AUC, strangers vs test | dermoscopic test let "
              "through | clinical test let through | clinical test `unsure`, all reasons |", "|---|---|---|---|---|---|"]
    for index, channels in layers:
        distance = fit_feature_distance(train_features[index], groups)
        bar = float(np.quantile(distance(parts["val"][0][index]), 0.995))
        test_d, stranger_d = distance(test_features[index]), distance(stranger_features[index])
        auc = roc_auc_score(np.r_[np.zeros(len(test_d)), np.ones(len(stranger_d))], np.r_[test_d, stranger_d])
        cal = dataclasses.replace(predictor.calibration, ood_distance_max=bar)
        unsure = unsure_share(test_logits[clinical], test_d[clinical],
                              [q for q, c in zip(test_problems, clinical) if c], cal)
        mark = " (the checkpoint's)" if index == stored else ""
        lines.append(f"| {index}, {channels}{mark} | {int((stranger_d > bar).sum())} of {len(stranger_d)} | "
                     f"{auc:.3f} | {np.mean(test_d[~clinical] <= bar):.1%} | {np.mean(test_d[clinical] <= bar):.1%} "
                     f"| {unsure:.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        command = "python -m bench.ood" + (f" --checkpoint {args.checkpoint}" if args.checkpoint != p.get_default(
            "checkpoint") else "")
        RESULTS.write_text(f"# Photos that are not skin spots\n\n`{command} --write`\n\n"
                           f"{__doc__.split(chr(10) + chr(10), 1)[1]}\n{text}")


if __name__ == "__main__":
    main()
