"""What the benches that compare models share (`bench.shortcuts`, `bench.zoomed_out`): the command line (which
checkpoints, their short names), the validation images framed once for all models, and the table's record."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from data.datasets import DEFAULT_DATA
from data.images import ImageError, read_image, working_copy
from data.presets import frame_and_resize
from data.splits import model_splits
from model.checkpoint import DEFAULT_CHECKPOINT


def parse_models(prog: str, doc: str, results: Path,
                 argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """--checkpoints, --names (default: each checkpoint's folder name) and --write, for the command `prog`."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", default=[str(DEFAULT_CHECKPOINT)])
    p.add_argument("--names", nargs="+", default=None, help="a short name per checkpoint for the table")
    p.add_argument("--write", action="store_true", help=f"also write the table to {results.name}")
    args = p.parse_args(argv)
    return args, args.names or [Path(c).parent.name for c in args.checkpoints]


def validation_key(meta: dict) -> str:
    """Which validation split a checkpoint was trained with: models that share it can share its framed images."""
    return meta.get("split_sha256", {}).get("val") or f"split seed {meta.get('split_seed', 0)}"


def framed_validation(size: int, meta: dict,
                      flatten_lightness: bool = False) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Per domain: the validation images of the model whose checkpoint `meta` is given, framed as a predictor with
    this framing setting frames them (`Predictor.settings.flatten_lightness`), at `size`, and their targets."""
    by_domain: dict[str, tuple[list, list]] = {}
    for sample in model_splits(meta, DEFAULT_DATA)["val"]:
        try:
            square = frame_and_resize(working_copy(read_image(sample.path)), size=size,
                                      flatten_lightness=flatten_lightness)[0]
        except ImageError:
            continue
        squares, targets = by_domain.setdefault(sample.domain, ([], []))
        squares.append(square)
        targets.append(sample.target)
    return {d: (s, np.array(t)) for d, (s, t) in sorted(by_domain.items())}


def publish(lines: list[str], *, title: str, module: str, doc: str, results: Path, args: argparse.Namespace,
            names: list[str]) -> None:
    """Print the table; with --write keep it in `results` under the title, the commands that made it and the
    bench's docstring (less its first line). Rows of models this run does not name stay, so that a table can
    grow one model at a time; a model's rows are replaced by the next run that names it."""
    print("\n".join(lines) + "\n")
    if not args.write:
        return
    command = f"`python -m {module} --checkpoints {' '.join(args.checkpoints)} --names {' '.join(names)} --write`"
    commands, kept = earlier_rows(results, header=lines[:2], replaced=set(names))
    made_by = "\n".join(f"- {c}" for c in [*commands, command])
    table = "\n".join(lines[:2] + kept + lines[2:])
    results.write_text(f"# {title}\n\nMade by these commands, in order (a model's rows come from the last one that "
                       f"names it):\n\n{made_by}\n\n{doc.split(chr(10) + chr(10), 1)[1]}\n{table}\n")


def earlier_rows(results: Path, *, header: list[str], replaced: set[str]) -> tuple[list[str], list[str]]:
    """The rows `results` already holds for models not in `replaced`, and the commands that made them; none
    when there is no such file or its table has other columns."""
    if not results.is_file():
        return [], []
    text = results.read_text().splitlines()
    table = [line for line in text if line.startswith("|")]
    if table[:2] != header:
        print(f"{results.name}: its table has other columns; its rows are not kept")
        return [], []
    rows = [(row, row.split("|")[1].strip()) for row in table[2:]]  # each row and its model, the first column
    kept = [(row, model) for row, model in rows if model not in replaced]
    commands = [found for line in text
                if (found := re.fullmatch(r"(?:- )?(`python -m .* --names (.*) --write`)", line))]
    made_by = {}  # model -> the last command that names it, which made its rows
    for found in commands:
        made_by.update(dict.fromkeys(found[2].split(), found[1]))
    still_made = {made_by.get(model) for _, model in kept}
    return [found[1] for found in commands if found[1] in still_made], [row for row, _ in kept]
