"""Does the model look at the lesion, or at pen circles, rulers and caption bars? `python -m bench.heatmap_focus`.

Some clinical sources carry shortcuts: the NCI atlas nevi have pen circles,
case numbers and rulers; many SD-198 photos have a grey caption bar. For every
clinical validation and test photo (never trained on) this measures how much of
the class activation map (the heatmap the app shows) falls on the middle of the
framed crop, where the framing puts the spot: the central square of half the
side, 25% of the area. A model that looked at the surroundings (marks, bars,
rulers) would put most of its heatmap outside it; an even spread puts 25% inside.

Prints a table per source and class; `--sheets DIR` also writes contact sheets
(photo, framed crop with heatmap) to look at. They show the data's images, so
keep them out of the repository.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from data.datasets import DEFAULT_DATA, load_dataset
from data.images import read_image
from data.splits import split_samples
from model.predictor import Predictor, overlay_heatmap

THUMB = 160


def central_share(heatmap: np.ndarray) -> float:
    """The share of the heatmap's mass on the central square of half the side."""
    n = heatmap.shape[0]
    inside = heatmap[n // 4 : n - n // 4, n // 4 : n - n // 4].sum()
    return float(inside / heatmap.sum()) if heatmap.sum() > 0 else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="default: the embedded model")
    p.add_argument("--data", default=DEFAULT_DATA[1], help="the clinical set")
    p.add_argument("--sheets", default=None, help="folder for contact sheets (not for the repository)")
    args = p.parse_args(argv)
    predictor = Predictor(args.checkpoint)
    parts = split_samples(load_dataset(args.data), seed=int(predictor.meta.get("split_seed", 0)), n_folds=5)
    samples = parts["val"] + parts["test"]
    shares: dict[tuple[str, str], list[float]] = {}
    tiles: dict[tuple[str, str], list[np.ndarray]] = {}
    for sample in samples:
        image = read_image(sample.path)
        result = predictor.predict(image)
        key = (sample.stratum.split("/")[0], sample.label)  # the clinical set's stratum is "source/label"
        shares.setdefault(key, []).append(central_share(result.heatmap))
        photo = cv2.resize(image, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
        overlay = cv2.resize(overlay_heatmap(result.square, result.heatmap), (THUMB, THUMB))
        tiles.setdefault(key, []).append(np.concatenate([photo, overlay], axis=1))

    print("Heatmap mass on the middle of the framed crop (25% of its area), clinical validation + test photos\n")
    print("| source | class | photos | median share in the middle | photos with over half in the middle |")
    print("|---|---|---|---|---|")
    for (source, label), values in sorted(shares.items()):
        v = np.array(values)
        print(f"| {source} | {label} | {len(v)} | {np.nanmedian(v):.2f} | {np.mean(v > 0.5):.0%} |")
    if args.sheets:
        out = Path(args.sheets)
        out.mkdir(parents=True, exist_ok=True)
        for (source, label), row in tiles.items():
            rows = [np.concatenate(row[i : i + 4] + [np.zeros_like(row[0])] * (4 - len(row[i : i + 4])), axis=1)
                    for i in range(0, len(row), 4)]
            cv2.imwrite(str(out / f"{source}_{label}.jpg"), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR))
        print(f"\ncontact sheets in {out}")


if __name__ == "__main__":
    main()
