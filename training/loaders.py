"""Turning samples into tensors for training: decode once, sample with balance, augment per draw."""
from __future__ import annotations

import contextlib
import gc
import multiprocessing
import sys
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from data.datasets import Sample
from data.flags import leave_signals_to_parent, workers_starting
from data.images import MIN_PHOTO_SIDE, ImageError, read_image, working_copy
from data.presets import EvalSettings, TrainPreset, frame_and_resize, normalize_as


def _framed(args: tuple[str, int, bool]) -> np.ndarray | str:
    """The image framed and resized, or why it cannot be used: unreadable, or too small for the app to judge (a
    thumbnail or a strip would be trained on as a spot that the app answers `unsure`)."""
    path, side, flatten_lightness = args
    try:
        image = read_image(path)
    except ImageError as err:
        return str(err)
    if min(image.shape[:2]) < MIN_PHOTO_SIDE:
        return f"too small: {image.shape[1]}x{image.shape[0]} pixels, under {MIN_PHOTO_SIDE} on a side"
    # Framed from its working copy, as model.predictor frames a photo: the same crop for a photo of any size.
    return frame_and_resize(working_copy(image), size=side, flatten_lightness=flatten_lightness)[0]


def decode_all(samples: list[Sample], side: int, workers: int, desc: str,
               flatten_lightness: bool = False) -> tuple[np.ndarray, list[Sample]]:
    """Read, frame (`flatten_lightness`: see `data.framing`) and resize every image once: (N, side, side, 3) uint8
    and the samples kept.

    Images that cannot be used are skipped with a warning that names each and says why, rather than stopping a long
    run (none may be left: the caller says which class that leaves without images).
    """
    jobs = [(str(s.path), side, flatten_lightness) for s in samples]
    if workers > 1:
        # Garbage freed here, not by a forked worker's collector: an ONNX Runtime session left from an earlier step
        # (evaluation, in a test process) had been destroyed in a worker, where its threads do not exist, and its
        # destructor waited for them for ever.
        gc.collect()
        with contextlib.ExitStack() as stack:
            with workers_starting():
                pool = stack.enter_context(multiprocessing.get_context("fork").Pool(
                    workers, initializer=leave_signals_to_parent))
            pixels = list(tqdm(pool.imap(_framed, jobs, chunksize=32), total=len(jobs), desc=desc, leave=False, disable=None))
    else:
        pixels = [_framed(job) for job in tqdm(jobs, desc=desc, leave=False, disable=None)]
    kept = [i for i, p in enumerate(pixels) if not isinstance(p, str)]
    if len(kept) < len(samples):
        bad = [f"  {samples[i].path}: {p}" for i, p in enumerate(pixels) if isinstance(p, str)]
        print(f"warning: {desc}: skipped {len(bad)} image{'s' * (len(bad) != 1)} that cannot be used:", *bad, sep="\n", file=sys.stderr)
    stacked = np.stack([pixels[i] for i in kept]) if kept else np.empty((0, side, side, 3), np.uint8)
    return stacked, [samples[i] for i in kept]


def sampling_weights(samples: list[Sample], clinical_share: float) -> np.ndarray:
    """Per-sample draw weights: every class equally often, and clinical photos `clinical_share` of draws.

    Within each domain (dermoscopy vs clinical photos) each class gets the same
    share, so the 100-odd vascular images are drawn as often as the thousands
    of nevi: imbalance is handled by the sampler, and the loss stays plain.
    """
    domain = [s.domain for s in samples]
    counts = Counter(zip(domain, (s.label for s in samples)))
    classes_in = Counter(d for d, _ in counts)
    has_clinical = "clinical" in classes_in
    share = {"clinical": clinical_share if has_clinical else 0.0, "dermoscopy": 1.0 - clinical_share if has_clinical else 1.0}
    if "dermoscopy" not in classes_in:
        share["clinical"] = 1.0
    return np.array([share[d] / classes_in[d] / counts[(d, s.label)] for d, s in zip(domain, samples)])


def clinical_draw_share(samples: list[Sample], clinical_share: float) -> float:
    """The share of draws that are clinical photos: `clinical_share` beside dermoscopy, 1.0 without it, 0 with no
    clinical photos."""
    weights = sampling_weights(samples, clinical_share)
    return round(float(weights[[s.domain == "clinical" for s in samples]].sum() / weights.sum()), 3)


class EpochDraws(torch.utils.data.Dataset):
    """One epoch's draws; each draw's augmentation is seeded by (seed, epoch, position), so
    a resumed run sees exactly the images an uninterrupted one would. `clinical`: per image, whether it is a
    clinical photo rather than dermoscopy (the preset augments the two differently)."""

    def __init__(self, pixels: np.ndarray, targets: np.ndarray, weights: np.ndarray, preset: TrainPreset,
                 *, clinical: np.ndarray, draws: int, seed: int, epoch: int):
        rng = np.random.default_rng([seed, epoch])
        self.indices = rng.choice(len(pixels), size=draws, replace=True, p=weights / weights.sum())
        self.pixels, self.targets, self.preset, self.seed, self.epoch = pixels, targets, preset, seed, epoch
        self.clinical = clinical

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, np.ndarray]:
        i = self.indices[k]
        image = self.preset(self.pixels[i], np.random.default_rng([self.seed, self.epoch, k]),
                            clinical=bool(self.clinical[i]))
        return torch.from_numpy(image), self.targets[i]


def eval_batches(pixels: np.ndarray, settings: EvalSettings, *, batch_size: int) -> Iterator[torch.Tensor]:
    """Eval-preset batches of already framed, model-sized squares, normalised as `settings` say."""
    for start in range(0, len(pixels), batch_size):
        yield torch.from_numpy(np.stack([normalize_as(p, settings) for p in pixels[start : start + batch_size]]))
