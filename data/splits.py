"""Reproducible train/val/test splits that never put one lesion in two splits.

The samples are cut into `n_folds` stratified folds by group (lesion_id for
HAM10000): fold 0 is the test split, fold 1 the validation split, the rest
train. Same samples + same seed -> same split, on any machine.

A checkpoint also records which images its validation and test splits held
(`split_members`), so that evaluation and the benches score a model on its own
split even after the splitting code has changed (`model_splits`).
"""
from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from pathlib import Path

from sklearn.model_selection import StratifiedGroupKFold

from data.datasets import CLASSES, DOMAINS, Sample, load_dataset
from data.identity import image_keys, is_seen
from data.images import ImageError, read_image

SPLITS = ("train", "val", "test")


def split_samples(samples: list[Sample], *, seed: int = 0, n_folds: int = 7) -> dict[str, list[Sample]]:
    """Split by `group`, stratified by `stratum`; each of val and test holds about 1/n_folds."""
    ordered = sorted(samples, key=lambda s: str(s.path))  # independent of file-system order
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of = [0] * len(ordered)
    strata = [s.stratum for s in ordered]
    groups = [s.group for s in ordered]
    with warnings.catch_warnings():  # sklearn's "least populated class in y" names neither folder nor class: a
        # diagnosis rarer than the folds is spread as well as it can be, and a class too rare is `check_lesions`'s
        warnings.filterwarnings("ignore", "The least populated class in y", UserWarning)
        for fold, (_, held) in enumerate(folds.split(ordered, strata, groups)):
            for i in held:
                fold_of[i] = fold
    split = {name: [] for name in SPLITS}
    for sample, fold in zip(ordered, fold_of):
        split["test" if fold == 0 else "val" if fold == 1 else "train"].append(sample)
    return split


def load_splits(roots: list[str], seed: int, folder_domain: str = "dermoscopy") -> dict[str, list[Sample]]:
    """Split each data folder on its own (by lesion/patient group) and pool the parts: training, evaluation and
    the benches all call this, so they agree on which image is in which split. `folder_domain`: what the photos of
    a class-per-folder tree are (`data.datasets.DOMAINS`)."""
    pooled = {name: [] for name in SPLITS}
    for root in roots:
        samples = load_dataset(root, folder_domain)
        folds = 7 if len(samples) >= 2000 else 5  # small sets: bigger val/test parts
        check_lesions(samples, folds, root)
        for name, part in split_samples(samples, seed=seed, n_folds=folds).items():
            pooled[name] += part
        print(f"{root}: {len(samples)} images, {folds} folds{tree_note(samples)}")
    for name, part in pooled.items():
        print(f"  {name}: {len(part)} images {class_counts(part)}")
    return pooled


def check_lesions(samples: list[Sample], n_folds: int, root: str) -> None:
    """ValueError when every class `root` holds has fewer than `n_folds` lesions, a warning when some do: validation
    or test may then lack them (sklearn's own words had named neither the folder nor the class). A class the folder
    lacks is left to the other folders: training checks every class in the pooled splits."""
    lesions = {label: n for label in CLASSES if (n := len({s.group for s in samples if s.label == label}))}
    few = [f"{label} {n}" for label, n in lesions.items() if n < n_folds]
    need = (f"each class needs at least {n_folds} lesions (a photo, or a lesion subfolder of photos) to reach training, "
            f"validation and test, and here {', '.join(few)}; add photos")
    if len(few) == len(lesions):
        raise ValueError(f"{root}: too few photos to split: {need}")
    if few:
        warnings.warn(f"{root}: too few photos of some classes: {need}", stacklevel=3)


def tree_note(samples: list[Sample]) -> str:
    """For a class-per-folder tree, what its photos are taken to be: the one thing about it no file says."""
    if not samples or samples[0].source != "folder":
        return ""
    other = next(d for d in DOMAINS if d != samples[0].domain)
    return f", taken as {samples[0].domain} photos (--folder-domain {other} if they are not)"


# How split names are made (`sample_name`), recorded in checkpoints and last.pt: one without it is older, and named
# a class folder's images by file name alone (`legacy`), as it still names every other image.
SPLIT_NAMING = "path within class folder"


def legacy_names(record: dict) -> bool:
    """Whether a checkpoint's meta (or a last.pt) recorded its images by file name alone (before December 6, 2026)."""
    return record.get("split_names") != SPLIT_NAMING


def sample_name(sample: Sample, *, legacy: bool = False) -> str:
    """An image as a split records it: source, label and file name, or path within its class folder (the same on
    any machine). `legacy`: the file name alone (`legacy_names`)."""
    return f"{sample.source}/{sample.label}/{sample.path.name if legacy else sample.within or sample.path.name}"


def split_digest(samples: list[Sample], *, legacy: bool = False) -> str:
    """Which images a split holds, as a SHA-256: a checkpoint records it so that evaluation can tell when the split
    it rebuilds is not the one the model was trained with."""
    return hashlib.sha256("\n".join(sorted(sample_name(s, legacy=legacy) for s in samples)).encode()).hexdigest()


def split_members(splits: dict[str, list[Sample]]) -> dict[str, list[str]]:
    """The names of the validation and test images (training: every other image), for a checkpoint to record.
    ValueError when two images share a name: the model could not be scored on its own split later."""
    counts = Counter(sample_name(s) for part in splits.values() for s in part)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        alike = [str(s.path) for part in splits.values() for s in part if sample_name(s) == repeated[0]]
        raise ValueError(f"{len(repeated)} image names occur twice or more in one class of the data folders (e.g. "
                         f"{' and '.join(sorted(alike))}): a split is recorded by name (source, class and path in the "
                         "class folder), so rename all but one of each")
    return {name: sorted(map(sample_name, splits[name])) for name in ("val", "test")}


def recorded_splits(roots: list[str], members: dict[str, list[str]], folder_domain: str = "dermoscopy", *,
                    legacy: bool = False) -> dict[str, list[Sample]]:
    """The splits a model recorded (`split_members`, named as `legacy` says) over `roots`, some or all of the folders
    it was trained on: its validation and test images by name, every other image training. ValueError when `roots`
    lack one of those images of their sources, or hold two images of one name."""
    samples = [s for root in roots for s in load_dataset(root, folder_domain)]
    sources = {s.source for s in samples}
    split_of = {name: split for split in ("val", "test") for name in members[split] if name.split("/")[0] in sources}
    by_name: dict[str, list[Sample]] = {}
    for sample in samples:
        by_name.setdefault(sample_name(sample, legacy=legacy), []).append(sample)
    for name, split in split_of.items():
        found = len(by_name.get(name, []))
        if found > 1 and legacy and name.startswith("folder/"):
            raise ValueError(f"{' '.join(roots)}: {found} images named {name}, which this model's {split} split "
                             "recorded: it was trained before an image's lesion subfolder was part of its name, so "
                             "it cannot tell them apart, and its split cannot be found again; retrain it")
        if found != 1:
            raise ValueError(f"{' '.join(roots)}: {found} images named {name}, which this model's {split} split "
                             "recorded: this is not the data it was trained on (for a folder that holds only some of "
                             "its images, --split all scores the others: it leaves out every image the model has seen)")
    pooled = {name: [] for name in SPLITS}
    for sample in samples:
        pooled[split_of.get(sample_name(sample, legacy=legacy), "train")].append(sample)
    print(f"{' '.join(map(str, roots))}: the split the model recorded")
    for name, part in pooled.items():
        print(f"  {name}: {len(part)} images {class_counts(part)}")
    return pooled


def resolved_paths(folders: list[str]) -> list[str]:
    """Folders as full paths, in their order: how a checkpoint records them, found again from any working folder."""
    return [str(Path(d).resolve()) for d in folders]


def recorded_names(meta: dict) -> set[str]:
    """The names of the images a checkpoint's validation and test splits recorded (none in older checkpoints)."""
    return {name for part in meta.get("split_members", {}).values() for name in part}


def at_recorded_path(meta: dict, root: str) -> bool:
    """Whether `root` is one of the data folders a checkpoint recorded (paths of the machine that trained it)."""
    return resolved_paths([root])[0] in resolved_paths(meta.get("data", []))


def trained_on(meta: dict, root: str) -> bool:
    """Whether the model whose checkpoint `meta` is given was trained on the folder `root`: a folder it recorded, or
    one holding an image its validation or test split recorded by name. The names find its data on other machines
    (a checkpoint records the paths of the machine that trained it) and in copies."""
    if at_recorded_path(meta, root):
        return True
    names = recorded_names(meta)
    legacy = legacy_names(meta)
    return bool(names) and any(sample_name(s, legacy=legacy) in names for s in load_dataset(root))


def all_its_folders(meta: dict, roots: list[str]) -> bool:
    """Whether `roots` are the folders the model was trained on (`trained_on`), all of them, wherever they lie."""
    return all(trained_on(meta, root) for root in roots) and len(set(resolved_paths(roots))) == len(meta.get("data", []))


def trained_folder_domain(meta: dict) -> str:
    """What the model took the photos of class-per-folder trees to be (`--folder-domain`; dermoscopy before the
    choice)."""
    return meta.get("flags", {}).get("folder_domain", "dermoscopy")


def model_splits(meta: dict, roots: list[str], folder_domain: str | None = None) -> dict[str, list[Sample]]:
    """The splits of the model whose checkpoint `meta` is given, over `roots`: as it recorded them when `roots` are
    some or all of the folders it was trained on, wherever they are now; else (other folders, or an older
    checkpoint, which recorded only digests) rebuilt from its split seed. `folder_domain`: what the photos of
    class-per-folder trees are (default: what the model took them to be)."""
    folder_domain = folder_domain or trained_folder_domain(meta)
    if "split_members" in meta and all(trained_on(meta, root) for root in roots):
        return recorded_splits(roots, meta["split_members"], folder_domain, legacy=legacy_names(meta))
    return load_splits(roots, int(meta.get("split_seed", 0)), folder_domain)


def train_on_seen(splits: dict[str, list[Sample]], seen: set[str]) -> tuple[dict[str, list[Sample]], dict[str, int]]:
    """The splits with every lesion group that holds an image a model has seen (`data.identity` keys) moved into
    training, for a model fine-tuned from that one: what it started from must not validate or test it. Also how
    many images validation and test gave up."""
    groups = {s.group for name in ("val", "test") for s in splits[name] if is_seen(s.path, seen)}
    return into_training(splits, {(name, group) for name in ("val", "test") for group in groups})


def copies_into_training(splits: dict[str, list[Sample]]) -> tuple[dict[str, list[Sample]], dict[str, int]]:
    """The splits with every validation and test lesion that shares an image with a lesion of another split (the
    same file, or the same ISIC image: `data.identity` keys, e.g. in two data folders or under two names) moved into
    training, and the lesions it is linked to through other copies too; and how many images validation and test gave
    up. Lesions are told apart by split and group (two folders' groups of one name are one lesion here: moved
    together, never left apart). A file that is no readable image is a copy of nothing (`linking_keys`)."""
    link: dict[tuple[str, str], tuple[str, str]] = {}

    def root(node: tuple[str, str]) -> tuple[str, str]:
        while link.setdefault(node, node) != node:
            node = link[node]
        return node

    holder: dict[str, tuple[str, str]] = {}  # key -> the first lesion seen with it
    for name, s, keys in linking_keys(splits):
        for key in keys:
            node = holder.setdefault(key, (name, s.group))
            link[root((name, s.group))] = root(node)
    spans: dict[tuple[str, str], set[str]] = {}
    for node in list(link):
        spans.setdefault(root(node), set()).add(node[0])
    return into_training(splits, {node for node in link if len(spans[root(node)]) > 1})


def linking_keys(splits: dict[str, list[Sample]]) -> list[tuple[str, Sample, set[str]]]:
    """Each sample with its split and the keys (`data.identity`) that may link it to a copy: none for a file that
    shares a key with another split's file but is no readable image. Training skips such a file (evaluation a test
    one), naming it, so it cannot leak; byte-identical broken files had been reported as copies moved into training
    instead. Only files with a key in two splits are read: one data set given twice (HAM10000 in two layouts) would
    otherwise be decoded whole before training began."""
    keyed = [(name, s, image_keys(s.path)) for name, part in splits.items() for s in part]
    splits_of: dict[str, set[str]] = {}
    for name, _, keys in keyed:
        for key in keys:
            splits_of.setdefault(key, set()).add(name)
    return [(name, s, set() if any(len(splits_of[k]) > 1 for k in keys) and not is_readable(s.path) else keys)
            for name, s, keys in keyed]


def is_readable(path: Path) -> bool:
    """Whether `path` is an image that `read_image` reads (as training does before it trains on one)."""
    try:
        read_image(path)
    except ImageError:
        return False
    return True


def into_training(splits: dict[str, list[Sample]],
                  lesions: set[tuple[str, str]]) -> tuple[dict[str, list[Sample]], dict[str, int]]:
    """The splits with the validation and test `lesions` (split, group) moved into training, and how many images
    validation and test gave up."""
    moved = {name: [s for s in splits[name] if (name, s.group) in lesions] for name in ("val", "test")}
    kept = {name: [s for s in splits[name] if (name, s.group) not in lesions] for name in ("val", "test")}
    return {"train": splits["train"] + moved["val"] + moved["test"], **kept}, {k: len(v) for k, v in moved.items()}


def class_counts(samples: list[Sample]) -> dict[str, int]:
    counts = Counter(s.label for s in samples)
    return {c: counts.get(c, 0) for c in CLASSES}
