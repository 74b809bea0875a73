"""Does the model look at the lesion, or at pen circles, rulers and caption bars? `python -m bench.heatmap_focus`.

Some clinical sources carry shortcuts: the NCI atlas nevi have pen circles,
case numbers and rulers; many SD-198 photos have a grey caption bar. For every
clinical validation and test photo (never trained on) this measures how much of
the class activation map (the heatmap the app shows) falls on the middle of the
framed crop, where the framing puts the spot: the central square of half the
side, 25% of the area. A model that looked at the surroundings (marks, bars,
rulers) would put most of its heatmap outside it; an even spread puts 25% inside.

It also checks the heatmap against occlusion sensitivity, the model-agnostic reference: grey out a square
(a fifth of the side) at each place in the crop and see how much the top class's logit drops. The correlation of
that map with the heatmap says whether the heatmap shows where the evidence is; it is measured for the heatmap as
drawn (each feature cell on the pixel it is centred on) and, for comparison in the same run, for the feature
cells spread evenly over the crop by a plain resize, as earlier versions drew it.

Prints the tables per source and class; `--sheets DIR` also writes contact sheets
(photo, framed crop with heatmap) to look at. They show the data's images, so
keep them out of the repository.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from data.datasets import DEFAULT_DATA
from data.images import read_image
from data.splits import model_splits
from model.predictor import Predictor, feature_stride, overlay_heatmap

THUMB = 160
OCCLUDER = 0.2  # the greyed-out square's side, as a share of the crop's
OCCLUDER_STEP = 8  # pixels between its places


def central_share(heatmap: np.ndarray) -> float:
    """The share of the heatmap's mass on the central square of half the side."""
    n = heatmap.shape[0]
    inside = heatmap[n // 4 : n - n // 4, n // 4 : n - n // 4].sum()
    return float(inside / heatmap.sum()) if heatmap.sum() > 0 else float("nan")


def occlusion_map(predictor: Predictor, x: np.ndarray, k: int) -> np.ndarray:
    """How much class k's logit drops when each pixel's neighbourhood is greyed out (the inputs are normalised, so
    0 is the training mean colour), averaged over the squares that cover the pixel."""
    n = x.shape[1]
    side = round(OCCLUDER * n)
    starts = range(0, n - side + 1, OCCLUDER_STEP)
    places = [(y, x0) for y in starts for x0 in starts]
    occluded = np.repeat(x[None], len(places), axis=0)
    for i, (y, x0) in enumerate(places):
        occluded[i, :, y : y + side, x0 : x0 + side] = 0
    logit = predictor.network(x[None])[0][0, k]
    drops = logit - predictor.network(occluded)[0][:, k]
    total, count = np.zeros((n, n)), np.zeros((n, n))
    for drop, (y, x0) in zip(drops, places):
        total[y : y + side, x0 : x0 + side] += drop
        count[y : y + side, x0 : x0 + side] += 1
    return total / np.maximum(count, 1)


def evenly_spread_heatmap(heatmap: np.ndarray, stride: int) -> np.ndarray:
    """The same map with its feature cells spread evenly over the crop by a plain resize, as it was drawn before.
    The cells' values are read back where the heatmap places them (cubic curves pass through them), up to the scale
    the heatmap was normalised by, which a correlation ignores."""
    cells = np.ascontiguousarray(heatmap[::stride, ::stride])
    return np.clip(cv2.resize(cells, heatmap.shape[::-1], interpolation=cv2.INTER_CUBIC), 0, None)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.heatmap_focus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="default: the embedded model")
    p.add_argument("--data", default=DEFAULT_DATA[1], help="the clinical set")
    p.add_argument("--sheets", default=None, help="folder for contact sheets (not for the repository)")
    args = p.parse_args(argv)
    predictor = Predictor(args.checkpoint)
    parts = model_splits(predictor.meta, [args.data])
    samples = parts["val"] + parts["test"]
    side = predictor.settings.size
    stride = feature_stride(side, predictor.network(np.zeros((1, 3, side, side), np.float32))[1].shape[-1])
    shares: dict[tuple[str, str], list[float]] = {}
    agreement: dict[tuple[str, str], list[tuple[float, float]]] = {}
    tiles: dict[tuple[str, str], list[np.ndarray]] = {}
    for sample in samples:
        image = read_image(sample.path)
        prepared = predictor.prepare(image)  # framed once, for the answer and the occlusion map alike
        result = predictor.classify([prepared])[0]
        key = (sample.stratum.split("/")[0], sample.label)  # the clinical set's stratum is "source/label"
        shares.setdefault(key, []).append(central_share(result.heatmap))
        x, k = prepared.input, predictor.classes.index(result.top)
        occlusion = occlusion_map(predictor, x, k)
        agreement.setdefault(key, []).append((correlation(result.heatmap, occlusion),
                                              correlation(evenly_spread_heatmap(result.heatmap, stride), occlusion)))
        photo = cv2.resize(image, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
        overlay = cv2.resize(overlay_heatmap(result.square, result.heatmap), (THUMB, THUMB))
        tiles.setdefault(key, []).append(np.concatenate([photo, overlay], axis=1))

    print("Heatmap mass on the middle of the framed crop (25% of its area), clinical validation + test photos\n")
    print("| source | class | photos | median share in the middle | photos with over half in the middle |")
    print("|---|---|---|---|---|")
    for (source, label), values in sorted(shares.items()):
        v = np.array(values)
        print(f"| {source} | {label} | {len(v)} | {np.nanmedian(v):.2f} | {np.mean(v > 0.5):.0%} |")
    print("\nHeatmap against occlusion sensitivity (correlation over the crop's pixels; 1 = the same map)\n")
    print("| source | class | photos | median r, as drawn | median r, cells spread evenly | as drawn closer |")
    print("|---|---|---|---|---|---|")
    pooled = np.array([pair for pairs in agreement.values() for pair in pairs])
    for (source, label), pairs in [*sorted(agreement.items()), (("all", ""), pooled)]:
        r = np.array(pairs)
        print(f"| {source} | {label} | {len(r)} | {np.nanmedian(r[:, 0]):.2f} | {np.nanmedian(r[:, 1]):.2f} | "
              f"{np.mean(r[:, 0] > r[:, 1]):.0%} |")
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
