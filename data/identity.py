"""Which photos a model has seen, whatever they are named now: so that scoring "photos it has never seen"
(`training.evaluate --split all`) leaves out copies of its own data, such as the public images its data came from.

A photo is known by keys, recorded in each checkpoint (`meta.seen_images`) for every image of its data:
- every photo by the first 12 hex digits of its file's SHA-256: the same file under any name;
- a HAM10000 / ISIC image also by its ISIC id (`ISIC_0031197`): the id names it in every release, at any size
  (checkpoints before December 7, 2026, the shipped one among them, recorded the id alone: an ISIC image renamed
  is not known to them);
- the project's clinical photos, re-encoded copies named after their original file's hash (`c_<16 hex>.jpg`, see
  ../shared/data/clinical/SOURCES.md), also by that hash: the public original is known too.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

ISIC_ID = re.compile(r"ISIC_\d{7}")
NAMED_BY_ORIGINAL = re.compile(r"c_([0-9a-f]{16})")
DIGITS = 12


def image_keys(path: Path) -> set[str]:
    """The keys a photo is known by (its name's alone for a file that cannot be read)."""
    keys = {path.stem} if ISIC_ID.fullmatch(path.stem) else set()
    if original := NAMED_BY_ORIGINAL.fullmatch(path.stem):
        keys.add(original.group(1)[:DIGITS])
    try:
        if path.stat().st_size:  # every empty file (a failed copy) is the same file: no key
            with path.open("rb") as f:
                keys.add(hashlib.file_digest(f, "sha256").hexdigest()[:DIGITS])
    except OSError:
        pass
    return keys


def is_seen(path: Path, seen: set[str]) -> bool:
    """Whether a photo is one of those whose keys `seen` holds (a checkpoint's `meta.seen_images`)."""
    return bool(image_keys(path) & seen)


def seen_keys(paths: list[Path]) -> list[str]:
    """What a checkpoint records of the photos of its data (all splits), sorted."""
    return sorted({key for path in paths for key in image_keys(path)})
