"""What the benches that compare models share (`bench.shortcuts`, `bench.zoomed_out`): the command line (which
checkpoints, their short names), the validation images framed once for all models, and the table's record."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from data.datasets import DEFAULT_DATA
from data.images import ImageError, read_image
from data.presets import frame_and_resize
from data.splits import load_splits
from model.checkpoint import DEFAULT_CHECKPOINT


def parse_models(doc: str, results: Path, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """--checkpoints, --names (default: each checkpoint's folder name) and --write."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", default=[str(DEFAULT_CHECKPOINT)])
    p.add_argument("--names", nargs="+", default=None, help="a short name per checkpoint for the table")
    p.add_argument("--write", action="store_true", help=f"also write the table to {results.name}")
    args = p.parse_args(argv)
    return args, args.names or [Path(c).parent.name for c in args.checkpoints]


def framed_validation(size: int, seed: int,
                      flatten_lightness: bool = False) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Per domain: the validation images framed as a predictor with this framing setting frames them
    (`Predictor.flatten_lightness`), at `size`, and their targets."""
    by_domain: dict[str, tuple[list, list]] = {}
    for sample in load_splits(DEFAULT_DATA, seed)["val"]:
        try:
            square = frame_and_resize(read_image(sample.path), size=size, flatten_lightness=flatten_lightness)[0]
        except ImageError:
            continue
        squares, targets = by_domain.setdefault(sample.domain, ([], []))
        squares.append(square)
        targets.append(sample.target)
    return {d: (s, np.array(t)) for d, (s, t) in sorted(by_domain.items())}


def publish(lines: list[str], *, title: str, module: str, doc: str, results: Path, args: argparse.Namespace,
            names: list[str]) -> None:
    """Print the table; with --write keep it in `results` under the title, the command that made it and the
    bench's docstring (less its first line)."""
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        results.write_text(f"# {title}\n\n`python -m {module} --checkpoints {' '.join(args.checkpoints)} "
                           f"--names {' '.join(names)} --write`\n\n{doc.split(chr(10) + chr(10), 1)[1]}\n{text}")
