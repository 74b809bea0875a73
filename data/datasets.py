"""Where labelled images come from: HAM10000 (as released, or as the ISIC 2018 challenge released it), the clinical
photo set, or a class-per-folder tree.

Each loader returns a list of `Sample`s. `group` is what must never straddle
splits (a lesion, a patient, a case series) and `stratum` is what the split
keeps in proportion (the finest label the source has).
"""
from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from data.identity import ISIC_ID
from data.images import is_image_file

CLASSES = ("vascular", "nevus", "other")
# What kind of photo an image is: taken through a skin microscope, or an ordinary camera or phone photo. Training
# samples, augments and calibrates the two apart (training.loaders, data.presets), and evaluation reports them apart.
DOMAINS = ("dermoscopy", "clinical")
# Where this project's machines keep the data: ../shared/data beside the repository.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = [str(SHARED_DATA / "ham10000"), str(SHARED_DATA / "clinical")]

# HAM10000 diagnosis -> SpotCheck group. Everything that is neither a vascular
# lesion nor a melanocytic nevus needs a doctor's look, so it is "other".
DX_TO_CLASS = {
    "vasc": "vascular",
    "nv": "nevus",
    "mel": "other",
    "bkl": "other",
    "bcc": "other",
    "akiec": "other",
    "df": "other",
}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str  # one of CLASSES
    group: str  # images of one lesion/patient share a group
    stratum: str  # finer label used to stratify splits (e.g. HAM10000 dx)
    source: str  # "ham10000", "clinical", "folder"
    domain: str  # one of DOMAINS
    detail: str = ""  # the source's own diagnosis, e.g. "mel"
    within: str = ""  # where file names may repeat (lesion subfolders of a class folder): its path there

    @property
    def target(self) -> int:
        return CLASSES.index(self.label)


# HAM10000 as the ISIC 2018 challenge (Task 3) released it: a one-hot ground truth and, apart, each image's lesion.
ISIC2018_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"  # image,MEL,NV,BCC,AKIEC,BKL,DF,VASC
ISIC2018_LESIONS = "ISIC2018_Task3_Training_LesionGroupings.csv"  # image,lesion_id,diagnosis_confirm_type


def table_delimiter(header: str) -> str:
    """Tab for a tab-separated table (as Dataverse serves HAM10000's metadata, `.tab`), else comma."""
    return "\t" if "\t" in header and "," not in header else ","


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a table that must have `columns`: comma- or tab-separated, a byte-order mark (as Excel saves
    UTF-8) ignored."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = f.readline()
            f.seek(0)
            reader = csv.DictReader(f, delimiter=table_delimiter(header))
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path} has no {', '.join(missing)} column "
                                 f"(its columns: {', '.join(reader.fieldnames or [])})")
            return list(reader)
    except UnicodeDecodeError:  # it had said only "'utf-8' codec can't decode byte 0xe9 in position 858"
        raise ValueError(f"{path} is not UTF-8 text: save it as UTF-8 (in Excel: \"CSV UTF-8\")") from None


def reading_problem(err: OSError | ValueError) -> str:
    """What stops the data being read, for an error message: a file or folder that cannot be read is named with the
    system's reason ("cannot read ...: Permission denied"), not as "[Errno 13] ..."."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"cannot read {err.filename}: {err.strerror}"
    return str(err)


HAM10000_METADATA = ("ham10000_metadata.csv", "ham10000_metadata.tab", "ham10000_metadata.txt")  # in any case


def ham10000_metadata(root: Path) -> Path | None:
    """HAM10000's metadata table in `root`: the CSV as released, or the `.tab` Dataverse serves by default."""
    tables = sorted(p for p in root.iterdir() if p.name.lower() in HAM10000_METADATA and p.is_file())
    return tables[0] if tables else None


def load_ham10000(root: str | Path) -> list[Sample]:
    """HAM10000 as released: `HAM10000_metadata.csv` (or `.tab`) plus the images.

    Images may sit in `images/`, in the Dataverse's `HAM10000_images_part_1/2`
    folders, or beside the CSV.
    """
    root = Path(root)
    metadata = ham10000_metadata(root)
    if metadata is None:
        raise FileNotFoundError(f"{root / 'HAM10000_metadata.csv'} not found: is {root} a HAM10000 folder?")
    rows = [(row["image_id"], row["lesion_id"], row["dx"])
            for row in _read_csv(metadata, ("image_id", "lesion_id", "dx"))]
    return _ham_samples(root, rows, metadata.name, f"`python -m data.download --out {root}` fetches and unpacks "
                                                   "both image archives")


def load_isic2018(root: str | Path) -> list[Sample]:
    """HAM10000 as the ISIC 2018 challenge released it (Task 3 training data): the ground-truth CSV, the lesion
    groupings CSV and the images, anywhere below `root`. The groupings are required: without them one lesion's
    images could land in different splits."""
    root = Path(root)
    csvs = _csv_files_under(root)
    truth, lesions = csvs.get(ISIC2018_TRUTH), csvs.get(ISIC2018_LESIONS)
    if truth is None:
        raise FileNotFoundError(f"{ISIC2018_TRUTH} not found under {root}: is it an ISIC 2018 (Task 3) folder?")
    if lesions is None:
        raise FileNotFoundError(f"{ISIC2018_LESIONS} not found under {root}: it says which images show the same "
                                "lesion, without which the split would leak (the challenge released it apart)")
    lesion_of = {row["image"]: row["lesion_id"] for row in _read_csv(lesions, ("image", "lesion_id"))}
    rows = []
    for row in _read_csv(truth, ("image",)):
        dx = [name for name, value in row.items() if name != "image" and float(value or 0) >= 0.5]
        if len(dx) != 1:
            raise ValueError(f"{truth.name}: {row['image']} has {len(dx)} diagnosis columns set to 1, not one")
        if row["image"] not in lesion_of:
            raise ValueError(f"{lesions.name} has no lesion_id for {row['image']}")
        rows.append((row["image"], lesion_of[row["image"]], dx[0]))
    return _ham_samples(root, rows, truth.name, "the images come in the challenge's "
                                                "ISIC2018_Task3_Training_Input.zip")


def _csv_files_under(root: Path) -> dict[str, Path]:
    """Each CSV file name at or below `root` -> its path (the first in sorted order where a name repeats)."""
    return {path.name: path for path in sorted(root.rglob("*.csv"), reverse=True)}


def _ham_samples(root: Path, rows: list[tuple[str, str, str]], listed_in: str, hint: str) -> list[Sample]:
    """Samples for (image_id, lesion_id, dx) rows, each image found below `root`; every listed image must be there."""
    by_stem = _jpegs_under(root)
    samples, missing = [], []
    for image_id, lesion_id, dx in rows:
        path = by_stem.get(image_id)
        if path is None:
            missing.append(image_id)
            continue
        dx = dx.strip().lower()
        if dx not in DX_TO_CLASS:
            raise ValueError(f"{listed_in}: unknown dx {dx!r} for {image_id} (expected one of {', '.join(DX_TO_CLASS)})")
        samples.append(Sample(path, DX_TO_CLASS[dx], "ham:" + lesion_id, dx, source="ham10000", domain="dermoscopy",
                              detail=dx))
    if missing:  # e.g. one of the release's two image archives not unpacked: say so rather than train on half
        raise FileNotFoundError(f"{len(missing)} of the {len(rows)} images listed in {listed_in} are missing under "
                                f"{root} (e.g. {', '.join(missing[:3])}): is the download complete? ({hint})")
    return samples


def files_under(root: Path, leave_out: Callable[[str], bool] | None = None, *,
                unreadable: Callable[[OSError], None] | None = None) -> Iterator[Path]:
    """Every file below `root`, sorted. Symlinked folders are followed (downloads and shared folders are often linked
    in), each real folder once, so a link loop cannot hang the walk; hidden files and folders (macOS's `._` copies
    and `.DS_Store`, thumbnail caches), `__MACOSX` folders and the folders `leave_out` names are left out. A folder
    that cannot be read is a warning, not a stop (or handed to `unreadable`, to be counted)."""
    seen = set()
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=unreadable or _unreadable_folder):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX"
                         and not (leave_out and leave_out(os.path.join(folder, d))))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _unreadable_folder(err: OSError) -> None:
    warnings.warn(f"skipped a folder that cannot be read: {err.filename}: {err.strerror}", stacklevel=2)


def _jpegs_under(root: Path) -> dict[str, Path]:
    """Image id (file stem) -> path for every .jpg or .jpeg, in any case, below `root`. An id found twice in files
    of different sizes is refused: which is the release's cannot be told (e.g. a part unzipped by hand, cut short,
    beside a verified download), and taking the first would train on the wrong one."""
    found, differing = {}, []
    for path in files_under(root):
        if path.suffix.lower() in (".jpg", ".jpeg"):
            first = found.setdefault(path.stem, path)
            if first != path and first.stat().st_size != path.stat().st_size:
                differing.append((first, path))
    if differing:
        (a, b), more = differing[0], len(differing) - 1
        raise ValueError(f"{a.stem} is in two files below {root} that differ: {a} ({a.stat().st_size:,} bytes) and {b} "
                         f"({b.stat().st_size:,} bytes){f', and {more} more images' if more else ''}: remove the copies "
                         "that are not the release's (python -m data.download puts its verified images in "
                         f"{root / 'images'})")
    return found


# SD-198's images are DermQuest's, numbered in the order they were posted: a case's photos (a close-up and a wider
# view, or a series) carry consecutive numbers. Its SOURCES.md gives no patient ids, but on a contact sheet most
# pairs of one diagnosis numbered 1 or 2 apart show one patient, so a run of such numbers is kept in one split.
# A few of its photos come from another atlas, named by case and photo (10553-011.jpg, 10553-013.jpg): the case
# number leads the name in both, so it is the number compared.
SD198_SERIES_GAP = 2


def _clinical_group(source: str, original_path: str) -> str:
    """The unit a clinical photo must be split by, as its SOURCES.md says (SD-198: see `_sd198_series`)."""
    tail = original_path.split(":")[-1]
    if source == "nci_moles_to_melanoma":  # one case folder = one lesion over years
        return "nci:" + Path(tail).parent.name
    if source == "pad_ufes_20":  # PAT_<patient>_<lesion>_<image>
        match = re.search(r"PAT_(\d+)_", tail)
        return "pad:" + (match.group(1) if match else tail)
    return f"{source}:{Path(tail).stem}"


def _sd198_series(samples: list[Sample]) -> list[Sample]:
    """Give the SD-198 photos of one diagnosis whose case numbers (the digits leading the file name) lie at most
    SD198_SERIES_GAP apart one group (chained: 101, 102, 104 are one series). A photo whose name does not start with a
    number stays a group of its own."""
    numbered = []
    for i, sample in enumerate(samples):
        match = re.match(r"sd198_subset:(\d+)", sample.group)
        if match:
            numbered.append((sample.detail, int(match.group(1)), i))
    series = {}
    previous = None
    for detail, number, i in sorted(numbered):
        if previous is None or detail != previous[0] or number - previous[1] > SD198_SERIES_GAP:
            name = f"sd198_subset:{detail}:{number}"
        series[i] = name
        previous = (detail, number)
    return [replace(s, group=series[i]) if i in series else s for i, s in enumerate(samples)]


def load_clinical(root: str | Path) -> list[Sample]:
    """The clinical photo set: `labels.csv` (filename,label,source,...) plus `images/`. An optional `group` column
    names what must stay in one split (a lesion or a patient); without it, photos are grouped as the project's
    sources need (`_clinical_group`), and any other photo is a group of its own. An optional `diagnosis` column
    (else the project's `source_category`) lets evaluation count melanomas and carcinomas (training.metrics)."""
    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels} not found")
    samples = []
    for row in _read_csv(labels, ("filename", "label")):
        label = row["label"].strip().lower()  # "Nevus" as a class folder may be spelled
        if label not in CLASSES:
            raise ValueError(f"{labels}: unknown label {row['label']!r} for {row['filename']} (use one of {CLASSES})")
        source = row.get("source") or "clinical"
        if (row.get("group") or "").strip():  # the photographer's own: one lesion or patient, kept in one split
            group = f"{source}:group:{row['group'].strip()}"
        else:
            group = _clinical_group(source, row.get("original_path") or row["filename"])
        samples.append(
            Sample(root / "images" / row["filename"], label, group, f"{source}/{label}", source="clinical",
                   domain="clinical", detail=row.get("diagnosis") or row.get("source_category") or "")
        )
    missing = [s.path.name for s in samples if not s.path.is_file()]
    if missing:  # say so rather than split, and train on, what is not there
        raise FileNotFoundError(f"{len(missing)} of the {len(samples)} photos listed in {labels} are missing from "
                                f"{root / 'images'} (e.g. {', '.join(missing[:3])})")
    return _sd198_series(samples)


def class_of_folder(name: str) -> str | None:
    """The class a class folder's name gives, in any case: a class's own name (`Nevus/`), or a HAM10000 diagnosis
    code (`vasc/`, `nv/`, `mel/`, ...: trees sorted by HAM10000's `dx` are common); None for any other name."""
    name = name.lower()
    return name if name in CLASSES else DX_TO_CLASS.get(name)


def load_class_folders(root: str | Path, domain: str = "dermoscopy") -> list[Sample]:
    """A plain tree: `root/vascular/*.jpg`, `root/nevus/*.jpg`, `root/other/*.jpg`, of photos of one `domain`, or
    one folder per HAM10000 diagnosis (`root/vasc/`, `root/nv/`, `root/mel/`, ...; `class_of_folder`), whose code is
    then each photo's diagnosis (the report counts the melanomas called vascular).

    Every image is its own group; put one lesion's photos in a subfolder
    (`root/nevus/lesion42/a.jpg`) to keep them together in one split. Everything under one subfolder of a class
    folder stays together, however deep (`lesion42/closeups/b.jpg` too: a patient's or a lesion's folder of folders).
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown kind of photo {domain!r} (use one of {', '.join(DOMAINS)})")
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")
    for name in {p.name.lower() for p in folders if class_of_folder(p.name)}:
        if len(spelt := [p.name for p in folders if p.name.lower() == name]) > 1:  # Nevus/ and nevus/
            raise ValueError(f"{root}: {' and '.join(f'{n}/' for n in spelt)} are one folder name in two spellings: "
                             "move their photos into one of them")
    ignored = [p.name for p in folders if class_of_folder(p.name) is None]
    if ignored:
        warnings.warn(f"{root}: folders {', '.join(ignored)} are not classes ({', '.join(CLASSES)}, or HAM10000's "
                      "diagnosis codes) and are left out", stacklevel=2)
    loose = [p.name for p in root.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")]
    if class_of_folder(root.name):  # a class's own folder given as the tree: its photos are not loose (said below)
        loose = []
    samples = []
    for folder in (p for p in folders if class_of_folder(p.name)):
        label = class_of_folder(folder.name)
        dx = folder.name.lower() if folder.name.lower() in DX_TO_CLASS else ""  # the diagnosis a dx folder names
        for path in (p for p in files_under(folder) if is_image_file(p)):
            within = path.relative_to(folder)
            group = f"folder:{Path(folder.name, within.parts[0])}"  # the image itself, or its subfolder
            # Its name in a recorded split: a dx folder's code leads it, as several folders hold one class
            # (mel/IMG_0001.jpg and bcc/IMG_0001.jpg are two photos of `other`).
            name = f"{dx}/{within.as_posix()}" if dx else within.as_posix()
            samples.append(Sample(path, label, group, dx or label, source="folder", domain=domain, detail=dx,
                                  within=name))
    if not samples:
        advice = (f"{len(loose)} photo(s) lie outside class folders: {_loose_advice(root, loose)}" if loose
                  else _empty_tree_advice(root))
        raise FileNotFoundError(f"no images found under {root}/{{{','.join(CLASSES)}}}/ ({advice})")
    if loose:
        named = ", ".join(sorted(loose)[:3]) + (", ..." if len(loose) > 3 else "")
        warnings.warn(f"{root}: left out {len(loose)} photo(s) outside the class folders ({named}): "
                      f"{_loose_advice(root, loose)}", stacklevel=2)
    return samples


def _loose_advice(root: Path, loose: list[str]) -> str:
    """What to do with photos given loose, outside class folders: HAM10000's own images (`ISIC_0024306.jpg`) belong
    to their metadata table, not in class folders by hand."""
    if not any(ISIC_ID.fullmatch(Path(name).stem) for name in loose):
        return f"move each into {', '.join(f'{c}/' for c in CLASSES)}"
    if _holds_data(root.parent):
        return f"they are HAM10000 images: give {root.parent}, the folder that holds HAM10000_metadata.csv"
    return ("they are named as HAM10000 images: give the folder that holds them and HAM10000_metadata.csv, their "
            "labels (`python -m data.download --out DIR` fetches both)")


def _empty_tree_advice(root: Path) -> str:
    """Why a folder given as a class-per-folder tree holds no photos in class folders, and what to give instead."""
    if class_of_folder(root.name):
        return f"{root.name}/ looks like one class's folder: give the folder that holds it and the other classes'"
    inside = [str(p) for p in sorted(root.iterdir()) if _holds_data(p)]
    if inside:
        return f"it holds data set folders: give them, --data {' '.join(inside)}"
    return (f"{root} holds no HAM10000 metadata, no labels.csv and no image in class folders named "
            f"{', '.join(CLASSES)}")


def _holds_data(folder: Path) -> bool:
    """Whether `folder` is a HAM10000 or clinical data folder (False for one that cannot be read: advice only)."""
    try:
        return folder.is_dir() and (ham10000_metadata(folder) is not None or (folder / "labels.csv").is_file())
    except OSError:
        return False


class NoDataFolder(FileNotFoundError):
    """A data folder that does not exist, or is a file: a slip in the command line, which the commands refuse as one
    (exit status 2), not data that cannot be read."""


def load_dataset(root: str | Path, folder_domain: str = "dermoscopy") -> list[Sample]:
    """Pick the loader by what the folder holds. `folder_domain`: what a class-per-folder tree's photos are (HAM10000
    is dermoscopy, a `labels.csv` set clinical photos)."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise NoDataFolder(f"data folder {root} is a file: give the folder that holds the data")
        default = str(root) in DEFAULT_DATA  # a bare command run away from this project's machines
        raise NoDataFolder(f"data folder {root} does not exist" + (
            ": it is where this project's machines keep HAM10000 and the clinical photos, beside the repository; "
            "give your own folders with --data (`python -m data.download --out data_ham10000/` fetches HAM10000)"
            if default else ""))
    if ham10000_metadata(root) is not None:
        return load_ham10000(root)
    if (root / "labels.csv").is_file():
        return load_clinical(root)
    if ISIC2018_TRUTH in _csv_files_under(root):
        return load_isic2018(root)
    return load_class_folders(root, folder_domain)
