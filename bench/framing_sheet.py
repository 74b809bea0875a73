"""Where do two framings disagree? `python -m bench.framing_sheet [--out sheets/]`.

The framing has no ground-truth boxes to score against, so this bench makes
the check a person can do by eye: for every clinical photo of a class, frame
it the plain way and with the lightness gradient taken out
(`--flatten-lightness`), count the photos whose two frames overlap by less
than half (intersection over union), and draw those side by side on a contact
sheet (`OUT/framing_<class>.png`: plain frame green on the left, flattened
magenta on the right) to count which frame holds the spot; `OUT/framing_<class>.txt`
names the photo behind each number. No model is run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from data.datasets import CLASSES, DEFAULT_DATA, load_clinical
from data.framing import frame_spot
from data.images import analysis_copy, read_image

TILE = (200, 150)  # width, height of each photo on the sheet
PER_ROW = 4  # pairs per row


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def pair_tile(image: np.ndarray, plain: tuple, flat: tuple, caption: str) -> np.ndarray:
    """The photo twice, side by side: the plain frame in green, the flattened one in magenta; a caption on top."""
    sides = []
    for box, colour in ((plain, (0, 255, 0)), (flat, (255, 0, 255))):
        drawn = cv2.rectangle(image.copy(), box[:2], box[2:], colour, max(2, image.shape[1] // 100))
        sides.append(cv2.resize(drawn, TILE, interpolation=cv2.INTER_AREA))
    tile = np.hstack(sides)
    cv2.putText(tile, caption, (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
    return np.pad(tile, ((2, 2), (2, 2), (0, 0)))


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Write the sheets; return how many photos of each class the two framings disagree on."""
    parser = argparse.ArgumentParser(prog="python -m bench.framing_sheet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinical", default=DEFAULT_DATA[1], help="the clinical set (labels.csv + images/)")
    parser.add_argument("--out", default="runs/framing_sheets", help="folder for the contact sheets")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_clinical(args.clinical)
    print("| class | photos | frames differ (IoU < 0.5) | sheet |\n|---|---|---|---|")
    differing = {}
    for label in CLASSES:
        tiles, names = [], []
        photos = [s for s in samples if s.label == label]
        for sample in photos:
            image = read_image(sample.path)
            small = analysis_copy(image)  # what both framings measure: made once
            plain, flat = frame_spot(image, small).box, frame_spot(image, small, flatten_lightness=True).box
            if overlap(plain, flat) < 0.5:
                names.append(f"{len(tiles)} {sample.path.name} {sample.detail}")
                tiles.append(pair_tile(image, plain, flat, f"{len(tiles)} {sample.detail[:18]}"))
        sheet, differ = out / f"framing_{label}.png", len(tiles)
        differing[label] = differ
        if tiles:
            tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % PER_ROW)
            rows = [np.hstack(tiles[i : i + PER_ROW]) for i in range(0, len(tiles), PER_ROW)]
            cv2.imwrite(str(sheet), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
            sheet.with_suffix(".txt").write_text("\n".join(names) + "\n")
        print(f"| {label} | {len(photos)} | {differ} | {sheet if differ else '-'} |")
    return differing


if __name__ == "__main__":
    main()
