"""Loaders for the three data layouts, and splits that never leak a lesion."""
from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

import data.splits
from data.datasets import CLASSES, Sample, load_class_folders, load_clinical, load_dataset, load_ham10000
from data.identity import ISIC_ID, image_keys, seen_keys
from data.splits import (SPLIT_NAMING, copies_into_training, load_splits, model_splits, recorded_splits, sample_name,
                         split_digest, split_members, split_samples, trained_on)
from model.checkpoint import load_checkpoint
from tests.conftest import HAM_DX, SHARED_DATA, make_clinical, make_ham, needs_shared, spot_photo, write_rgb
from training.metrics import is_melanoma


def test_ham10000_mapping_and_groups(tmp_path):
    root = make_ham(tmp_path)
    metadata = root / "HAM10000_metadata.csv"  # all seven diagnoses: carcinomas too
    metadata.write_text(metadata.read_text().replace(",bkl,", ",bcc,", 3).replace(",df,", ",akiec,", 2))
    samples = load_ham10000(root)
    assert len(samples) == len(HAM_DX)
    by_dx = {s.detail: s.label for s in samples}
    assert by_dx == {"nv": "nevus", "mel": "other", "bkl": "other", "bcc": "other", "akiec": "other",
                     "vasc": "vascular", "df": "other"}
    assert len({s.group for s in samples}) == 60  # 20 nevus lesions with 2 images + 40 single


def test_ham10000_metadata_as_dataverse_serves_it(tmp_path):
    """Downloaded by hand from the Dataverse, the metadata is an ingested table: `HAM10000_metadata.tab`, tab-separated."""
    root = make_ham(tmp_path)
    expected = [(s.path.name, s.group, s.label) for s in load_dataset(root)]
    table = (root / "HAM10000_metadata.csv").read_text().replace(",", "\t")
    (root / "HAM10000_metadata.csv").unlink()
    (root / "HAM10000_metadata.tab").write_text(table)
    assert [(s.path.name, s.group, s.label) for s in load_dataset(root)] == expected


def test_ham10000_missing_image_is_reported(tmp_path):
    root = make_ham(tmp_path)
    for i in (3, 4, 5, 6):  # say, one image archive not unpacked: all missing ones are counted, a few named
        (root / "images" / f"ISIC_000000{i}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"4 of the 80 images .* \(e\.g\. ISIC_0000003, ISIC_0000004, "
                                                r"ISIC_0000005\): is the download complete\?"):
        load_ham10000(root)


def test_ham10000_images_in_a_linked_folder_with_upper_case_names_are_found(tmp_path):
    """A download linked in from elsewhere, saved by a tool that upper-cased the suffix; a link loop does not hang."""
    elsewhere = make_ham(tmp_path / "download")
    for image in (elsewhere / "images").iterdir():
        image.rename(image.with_suffix(".JPG"))
    root = tmp_path / "ham"
    root.mkdir()
    (root / "HAM10000_metadata.csv").symlink_to(elsewhere / "HAM10000_metadata.csv")
    (root / "images").symlink_to(elsewhere / "images", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    samples = load_ham10000(root)
    assert len(samples) == len(HAM_DX) and all(s.path.suffix == ".JPG" for s in samples)


def test_ham10000_unknown_diagnosis_is_a_clear_error(tmp_path):
    root = make_ham(tmp_path)
    text = (root / "HAM10000_metadata.csv").read_text()
    (root / "HAM10000_metadata.csv").write_text(text.replace(",nv,", ",NV,"))
    assert {s.detail for s in load_ham10000(root)} >= {"nv"}  # upper case is read as it is meant
    (root / "HAM10000_metadata.csv").write_text(text.replace(",mel,", ",melanoma,", 1))
    with pytest.raises(ValueError, match="unknown dx 'melanoma'"):
        load_ham10000(root)


def make_isic2018(ham: Path, root: Path) -> Path:
    """The miniature HAM10000 as the ISIC 2018 challenge released it: a one-hot ground truth in its own folder, the
    lesion groupings beside it, the images in the Task 3 input folder."""
    with (ham / "HAM10000_metadata.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    truth = root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    truth.parent.mkdir(parents=True)
    truth.write_text("image," + ",".join(columns) + "\n" + "".join(
        row["image_id"] + "," + ",".join("1.0" if c.lower() == row["dx"] else "0.0" for c in columns) + "\n"
        for row in rows))
    (root / "ISIC2018_Task3_Training_LesionGroupings.csv").write_text(
        "image,lesion_id,diagnosis_confirm_type\n" + "".join(f"{r['image_id']},{r['lesion_id']},histo\n" for r in rows))
    (ham / "images").rename(root / "ISIC2018_Task3_Training_Input")
    return root


def test_isic2018_challenge_layout_reads_as_ham10000(tmp_path):
    """HAM10000 downloaded from the ISIC 2018 challenge: the same samples, lesions and diagnoses as the release's
    metadata gives; without the lesion groupings (released apart) it is refused rather than split by image."""
    expected = [(s.path.name, s.label, s.group, s.detail) for s in load_ham10000(make_ham(tmp_path / "ham"))]
    root = make_isic2018(tmp_path / "ham", tmp_path / "isic")
    samples = load_dataset(root)
    assert [(s.path.name, s.label, s.group, s.detail) for s in samples] == expected
    assert {s.source for s in samples} == {"ham10000"}
    assert set(split_samples(samples, seed=0)) == {"train", "val", "test"}

    (root / "ISIC2018_Task3_Training_Input" / "ISIC_0000007.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 80 images listed in ISIC2018_Task3_Training_GroundTruth.csv"):
        load_dataset(root)
    (root / "ISIC2018_Task3_Training_LesionGroupings.csv").unlink()
    with pytest.raises(FileNotFoundError, match="LesionGroupings.csv not found .* the split would leak"):
        load_dataset(root)


def test_an_image_in_two_differing_files_is_refused_and_an_identical_copy_is_not(tmp_path):
    """A part of the release unzipped by hand and cut short, beside the verified download: the loader had taken the
    first copy it met (the broken one)."""
    root = make_ham(tmp_path / "ham")
    image = root / "images" / "ISIC_0000003.jpg"
    (root / "HAM10000_images_part_1").mkdir()
    shutil.copy(image, root / "HAM10000_images_part_1" / image.name)
    assert len(load_dataset(root)) == 80  # the same file twice: nothing to choose between
    (root / "HAM10000_images_part_1" / image.name).write_bytes(image.read_bytes()[:100])
    with pytest.raises(ValueError, match="ISIC_0000003 is in two files below .* that differ"):
        load_dataset(root)


def test_class_folders(class_tree):
    samples = load_dataset(class_tree)
    assert {s.label for s in samples} == set(CLASSES)
    assert len(samples) == 30 and len({s.group for s in samples}) == 30


def test_one_class_in_two_spellings_is_a_clear_error(tmp_path):
    """vascular/ and Vascular/ side by side: the message names both folders (it had spoken of repeated image names)."""
    for folder in ("vascular", "Vascular"):
        write_rgb(tmp_path / folder / "img0.png", spot_photo("vascular", size=32))
    with pytest.raises(ValueError, match=r"Vascular/ and vascular/ are one folder name in two spellings"):
        load_class_folders(tmp_path)


def test_class_folders_as_people_make_them(tmp_path):
    """Capitalised class names, a linked-in lesion folder, macOS's hidden copies and a folder that is no class."""
    write_rgb(tmp_path / "Vascular" / "v.png", spot_photo("vascular", size=32))
    write_rgb(tmp_path / "elsewhere" / "lesion3" / "n.png", spot_photo("nevus", size=32))
    (tmp_path / "nevus").mkdir()
    os.symlink(tmp_path / "elsewhere" / "lesion3", tmp_path / "nevus" / "lesion3")
    write_rgb(tmp_path / "other" / "o.png", spot_photo("other", size=32))
    (tmp_path / "other" / "._o.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    write_rgb(tmp_path / "other" / ".thumbnails" / "o.png", spot_photo("other", size=16))
    with pytest.warns(UserWarning, match="elsewhere are not classes"):
        samples = load_class_folders(tmp_path)
    assert sorted((s.label, s.path.name) for s in samples) == [("nevus", "n.png"), ("other", "o.png"),
                                                               ("vascular", "v.png")]
    assert {s.group for s in samples if s.label == "nevus"} == {"folder:nevus/lesion3"}


def test_a_data_folder_that_is_a_file_or_missing_says_which(tmp_path):
    photo = write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=32))
    with pytest.raises(FileNotFoundError, match="spot.png is a file: give the folder that holds the data"):
        load_dataset(photo)
    with pytest.raises(FileNotFoundError, match="gone does not exist"):
        load_dataset(tmp_path / "gone")


def test_copies_across_splits_go_into_training_however_they_chain(tmp_path):
    """A validation lesion holding a copy of a training image goes into training, and so does a test lesion holding
    a copy of that validation lesion's other image (a chain), and a copy shared by validation and test alone; an
    empty file (a failed copy) is no copy of another empty file."""
    def photo(name: str, seed: int) -> Path:
        return write_rgb(tmp_path / name, spot_photo("nevus", size=32, seed=seed))

    def sample(path: Path, group: str) -> Sample:
        return Sample(path, "nevus", group, "nv", "folder", "dermoscopy", "nv")

    t1, a1, a2, b1, c1, d1, e1 = (photo(f"{n}.png", i) for i, n in enumerate(["t1", "a1", "a2", "b1", "c1", "d1", "e1"]))
    shutil.copy(t1, a1)  # lesion a (validation) holds a copy of a training image ...
    shutil.copy(a2, b1)  # ... and lesion b (test) a copy of a's other image
    shutil.copy(c1, d1)  # lesions c (validation) and d (test) share a file, with training out of it
    empties = [tmp_path / "x.png", tmp_path / "y.png"]
    for empty in empties:
        empty.write_bytes(b"")
    splits = {"train": [sample(t1, "t")], "val": [sample(a1, "a"), sample(a2, "a"), sample(c1, "c"), sample(e1, "e"),
                                                  sample(empties[0], "x")],
              "test": [sample(b1, "b"), sample(d1, "d"), sample(empties[1], "y")]}
    moved, counts = copies_into_training(splits)
    assert counts == {"val": 3, "test": 2}
    assert {s.group for s in moved["train"]} == {"t", "a", "b", "c", "d"}
    assert [s.group for s in moved["val"]] == ["e", "x"] and [s.group for s in moved["test"]] == ["y"]


def test_byte_identical_files_that_are_no_image_are_no_copies(tmp_path):
    """Training skips (and names) a file it cannot read, so it cannot leak; three identical broken files had been
    taken as copies of one image and moved into training, with a message about copies. Real copies still are."""
    def sample(path: Path, group: str) -> Sample:
        return Sample(path, "vascular", group, "vascular", "folder", "dermoscopy")

    broken = [tmp_path / f"broken_{i}.jpg" for i in range(3)]
    for path in broken:
        path.write_bytes(b"not a photo")
    photo = write_rgb(tmp_path / "photo.png", spot_photo("vascular", size=48))
    shutil.copy(photo, tmp_path / "copy.png")
    splits = {"train": [sample(broken[0], "b0"), sample(photo, "p")],
              "val": [sample(broken[1], "b1")], "test": [sample(broken[2], "b2"), sample(tmp_path / "copy.png", "c")]}
    moved, counts = copies_into_training(splits)
    assert counts == {"val": 0, "test": 1}
    assert [s.group for s in moved["val"]] == ["b1"] and [s.group for s in moved["test"]] == ["b2"]


def test_only_files_that_could_link_two_splits_are_decoded_to_tell_copies(tmp_path, monkeypatch):
    """Files that share a key within one split link nothing across splits: they are not decoded (one data set given
    twice would have been decoded whole before training began)."""
    read = []
    monkeypatch.setattr(data.splits, "read_image", lambda path: read.append(Path(path).name))
    photo = write_rgb(tmp_path / "photo.png", spot_photo("vascular", size=48))
    for name in ("same_split.png", "other_split.png"):
        shutil.copy(photo, tmp_path / name)
    own = write_rgb(tmp_path / "own.png", spot_photo("nevus", size=48))

    def sample(name: str, group: str) -> Sample:
        return Sample(tmp_path / name, "vascular", group, "vascular", "folder", "dermoscopy")

    copies_into_training({"train": [sample("photo.png", "a"), sample("same_split.png", "b")],
                          "val": [sample(own.name, "c")], "test": []})
    assert read == []
    copies_into_training({"train": [sample("photo.png", "a")], "val": [sample("other_split.png", "b")], "test": []})
    assert sorted(read) == ["other_split.png", "photo.png"]


def test_a_lesion_folder_keeps_its_subfolders_in_its_split(tmp_path):
    """A patient's or a lesion's folder of folders (close-ups/, wide/) is one group: each innermost folder had been a
    group of its own, so one lesion's close-up and wide view could land in training and test."""
    write_rgb(tmp_path / "nevus" / "lesion6" / "a.png", spot_photo("nevus", size=32))
    write_rgb(tmp_path / "nevus" / "lesion6" / "closeups" / "b.png", spot_photo("nevus", size=32, seed=1))
    write_rgb(tmp_path / "nevus" / "c.png", spot_photo("nevus", size=32, seed=2))
    groups = {s.within: s.group for s in load_class_folders(tmp_path)}
    assert groups == {"lesion6/a.png": "folder:nevus/lesion6", "lesion6/closeups/b.png": "folder:nevus/lesion6",
                      "c.png": "folder:nevus/c.png"}


def test_clinical_photos_must_all_be_there_and_excel_csvs_read(tmp_path):
    root = make_clinical(tmp_path / "clinical")
    labels = root / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())  # a byte-order mark, as Excel saves UTF-8
    assert len(load_clinical(root)) == 30
    (root / "images" / "c_nevus_3.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 30 photos listed .* missing .*c_nevus_3.jpg"):
        load_clinical(root)
    labels.write_text("file,label\nx.jpg,nevus\n")
    with pytest.raises(ValueError, match="has no filename column"):
        load_clinical(root)


def test_a_users_own_labels_csv_can_keep_a_lesion_together_and_spell_labels_freely(tmp_path):
    rows = [("a.jpg", "Nevus", "lesion1", ""), ("b.jpg", "nevus ", "lesion1", ""), ("c.jpg", "VASCULAR", "", ""),
            ("d.jpg", "other", "", "Nodular melanoma")]
    (tmp_path / "labels.csv").write_text("filename,label,group,diagnosis\n"
                                         + "".join(f"{f},{l},{g},{d}\n" for f, l, g, d in rows))
    for name, *_ in rows:
        write_rgb(tmp_path / "images" / name, spot_photo("nevus", size=32))
    samples = load_clinical(tmp_path)
    assert [s.label for s in samples] == ["nevus", "nevus", "vascular", "other"]
    assert samples[0].group == samples[1].group and len({s.group for s in samples}) == 3
    assert is_melanoma([s.detail for s in samples]).tolist() == [False] * 3 + [True]  # counted in the report
    (tmp_path / "labels.csv").write_text("filename,label\na.jpg,mole\n")
    with pytest.raises(ValueError, match="unknown label 'mole'"):
        load_clinical(tmp_path)


def test_class_folders_keep_lesion_subfolders_together(tmp_path):
    for i in range(3):
        write_rgb(tmp_path / "nevus" / "lesion7" / f"{i}.png", spot_photo("nevus", size=32))
    assert {s.group for s in load_class_folders(tmp_path)} == {"folder:nevus/lesion7"}


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        load_dataset(tmp_path)


def test_clinical_groups_follow_sources(tmp_path):
    rows = [
        ("a.jpg", "nevus", "nci_moles_to_melanoma", "x", "o/r@1:assets/images/DN4/DN4A.jpg"),
        ("b.jpg", "other", "nci_moles_to_melanoma", "x", "o/r@1:assets/images/DN4/DN4C.jpg"),
        ("c.jpg", "nevus", "pad_ufes_20", "NEV", "o/r@1:images/PAT_417_828_723.png"),
        ("d.jpg", "nevus", "pad_ufes_20", "NEV", "o/r@1:images/PAT_417_900_1.png"),
        ("e.jpg", "vascular", "sd198_subset", "Angioma", "o/r@1:raw_images/Angioma/000101HB.jpg"),
        ("f.jpg", "vascular", "sd198_subset", "Angioma", "o/r@1:raw_images/Angioma/000104VB.jpg"),
        ("g.jpg", "vascular", "sd198_subset", "Angioma", "o/r@1:raw_images/Angioma/000102HB.jpg"),
        ("h.jpg", "vascular", "sd198_subset", "Angioma", "o/r@1:raw_images/Angioma/000107HB.jpg"),
        ("i.jpg", "other", "sd198_subset", "Keloid", "o/r@1:raw_images/Keloid/000108HB.jpg"),
        ("j.jpg", "other", "sd198_subset", "Keloid", "o/r@1:raw_images/Keloid/photo.jpg"),
        ("k.jpg", "other", "sd198_subset", "Keloid", "o/r@1:raw_images/Keloid/10553-011.jpg"),  # another atlas:
        ("l.jpg", "other", "sd198_subset", "Keloid", "o/r@1:raw_images/Keloid/10553-016.jpg"),  # case-photo
    ]
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "source", "source_category", "original_path"])
        writer.writerows(rows)
    for row in rows:
        write_rgb(tmp_path / "images" / row[0], spot_photo(row[1], size=32))
    groups = [s.group for s in load_clinical(tmp_path)]
    assert groups[0] == groups[1]  # one NCI case folder
    assert groups[2] == groups[3]  # one PAD-UFES patient
    # SD-198 has no patient ids: a run of DermQuest numbers at most 2 apart within one diagnosis is one case
    assert groups[4] == groups[5] == groups[6]  # 101, 102, 104: chained
    assert groups[7] != groups[4]  # 107: 3 after 104
    assert groups[8] not in groups[4:8]  # 108, one after 107, but another diagnosis
    assert groups[9] not in groups[:9]  # no number in the name: its own group
    assert groups[10] == groups[11] and groups[10] not in groups[:10]  # case 10553's photos 11 and 16
    assert len(set(groups)) == 7


def test_split_is_grouped_stratified_and_reproducible(tmp_path):
    samples = load_ham10000(make_ham(tmp_path))
    split = split_samples(samples, seed=3, n_folds=5)
    assert HAM_DX.count("df") < 7  # a diagnosis rarer than the folds is spread as it can be, without sklearn's
    with warnings.catch_warnings():  # "least populated class in y has only 6 members" (no folder, no class named)
        warnings.simplefilter("error")
        split_samples(samples, seed=3, n_folds=7)
    groups = {name: {s.group for s in part} for name, part in split.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(p) for p in split.values()) == len(samples)
    assert all(any(s.detail == "vasc" for s in part) for part in split.values())  # stratified
    again = split_samples(list(reversed(samples)), seed=3, n_folds=5)
    assert [s.path for s in again["test"]] == [s.path for s in split["test"]]
    other_seed = split_samples(samples, seed=4, n_folds=5)
    assert [s.path for s in other_seed["test"]] != [s.path for s in split["test"]]


def test_too_few_lesions_of_a_class_to_split_are_named(tmp_path):
    """sklearn's own words ("n_splits=5 cannot be greater than the number of members in each class") named neither
    the folder nor the class; with one class short of lesions it split anyway, and left it out of validation."""
    for label, count in (("vascular", 4), ("nevus", 4), ("other", 4)):
        for i in range(count):
            write_rgb(tmp_path / "tree" / label / f"{i}.png", spot_photo(label, size=32, seed=i))
    tree = str(tmp_path / "tree")
    with pytest.raises(ValueError, match=r"tree: too few photos to split: .* at least 5 lesions .* here vascular 4, "
                                         r"nevus 4, other 4; add photos"):
        load_splits([tree], seed=0)
    for label in ("nevus", "other"):
        for i in range(4, 8):
            write_rgb(tmp_path / "tree" / label / f"{i}.png", spot_photo(label, size=32, seed=i))
    with pytest.warns(UserWarning, match=r"tree: too few photos of some classes: .* here vascular 4; add photos"):
        load_splits([tree], seed=0)  # split all the same: another folder may bring vascular photos
    write_rgb(tmp_path / "tree" / "vascular" / "4.png", spot_photo("vascular", size=32, seed=4))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "too few")
        assert all(any(s.label == "vascular" for s in part) for part in load_splits([tree], 0).values())
    nevi = tmp_path / "nevi"  # a folder of one class, beside others: left to the pooled splits' own check
    for i in range(6):
        write_rgb(nevi / "nevus" / f"{i}.png", spot_photo("nevus", size=32, seed=i))
    assert {s.label for part in load_splits([str(nevi)], 0).values() for s in part} == {"nevus"}


@needs_shared
def test_real_ham10000_split_has_no_lesion_leak():
    samples = load_ham10000(SHARED_DATA / "ham10000")
    assert len(samples) == 10015
    split = split_samples(samples, seed=0, n_folds=7)
    test_lesions = {s.group for s in split["test"]}
    assert not test_lesions & {s.group for s in split["train"] + split["val"]}
    assert sum(s.label == "vascular" for s in split["test"]) >= 15


@needs_shared
def test_real_clinical_split_keeps_each_case_series_in_one_split():
    """No two photos of one SD-198 case series (numbers at most 2 apart within one diagnosis, read here from
    labels.csv apart from data.datasets) in two splits: such pairs are one patient, often one lesion.

    The shipped model was trained before the last such case was grouped (README "Results"): its checkpoint records
    its own split's members, which evaluation uses (`test_the_shipped_model_is_scored_on_the_split_it_recorded`)."""
    splits = load_splits([str(SHARED_DATA / "clinical")], seed=0)
    assert sum(map(len, splits.values())) == 541
    split_of = {s.path.name: name for name, part in splits.items() for s in part}
    with open(SHARED_DATA / "clinical" / "labels.csv", newline="") as f:
        numbered = sorted((row["source_category"], int(re.match(r"\d+", Path(row["original_path"]).stem)[0]),
                           split_of[row["filename"]]) for row in csv.DictReader(f)
                          if row["source"] == "sd198_subset" and re.match(r"\d", Path(row["original_path"]).stem))
    apart = [(a, b) for a, b in zip(numbered, numbered[1:]) if a[0] == b[0] and b[1] - a[1] <= 2 and a[2] != b[2]]
    assert not apart, f"{len(apart)} pairs of one case series in two splits, e.g. {apart[:2]}"


def test_a_recorded_split_is_found_again_whatever_the_splitting_code_does_later(tmp_path, monkeypatch):
    """A checkpoint's `split_members` give back its split exactly, over all its folders or some of them, after the
    grouping has changed; a folder that lacks one of its images, or holds two of one name, is refused."""
    roots = [str(make_ham(tmp_path / "ham")), str(make_clinical(tmp_path / "clinical"))]
    splits = load_splits(roots, seed=0)
    meta = {"data": roots, "split_seed": 0, "split_members": split_members(splits)}
    assert len(meta["split_members"]["test"]) == len(splits["test"])  # names are unique across the folders
    monkeypatch.setattr("data.splits.split_samples", lambda samples, **k: split_samples(samples, seed=7))  # regrouped
    assert {k: split_digest(v) for k, v in model_splits(meta, roots).items()} == \
        {k: split_digest(v) for k, v in splits.items()}
    assert split_digest(load_splits(roots, seed=0)["test"]) != split_digest(splits["test"])  # rebuilt: another split
    clinical = model_splits(meta, roots[1:])  # one of its folders: that folder's part of the split
    assert {k: split_digest(v) for k, v in clinical.items()} == \
        {k: split_digest([s for s in v if s.source == "clinical"]) for k, v in splits.items()}
    elsewhere = {**meta, "data": ["/the/machine/that/trained/it/ham", "/the/machine/that/trained/it/clinical"]}
    assert split_digest(model_splits(elsewhere, roots)["test"]) == split_digest(splits["test"])  # found by name
    tree = tmp_path / "tree"
    for label in ("vascular", "nevus", "other"):
        for i in range(7):  # enough for the 7 folds of the regrouping above
            write_rgb(tree / label / f"{i}.png", spot_photo(label, size=32, seed=i))
    for others in ([str(tree)], [roots[0], str(tree)]):  # not its folders: rebuilt, with a warning in evaluation
        assert split_digest(model_splits(meta, others)["test"]) == split_digest(load_splits(others, seed=0)["test"])
    twice = shutil.copytree(roots[1], tmp_path / "clinical copy")  # each recorded clinical name twice: which one?
    with pytest.raises(ValueError, match=r"2 images named clinical/\w+/c_\w+\.jpg, which this model's (val|test)"):
        recorded_splits([roots[1], str(twice)], meta["split_members"])
    missing = next(s for s in splits["val"] if s.source == "ham10000")
    missing.path.unlink()
    with pytest.raises(FileNotFoundError, match="is the download complete"):  # HAM10000's loader notices first
        model_splits(meta, roots)
    with pytest.raises(ValueError, match=r"0 images named .*, which this model's val split recorded"):
        recorded_splits(roots[1:], {"val": [*meta["split_members"]["val"], "clinical/nevus/gone.jpg"], "test": []})


def test_an_older_checkpoints_image_names_are_read_as_written_and_only_its_own(tmp_path):
    """Checkpoints from before December 6, 2026 (no `split_names`) named a class folder's images by file name alone,
    newer ones by their path within the class folder: each is read as it was written, so another clinic's tree
    that happens to hold the same file name is no newer model's data, and an older model trained on camera names
    repeated across lesion subfolders is told it cannot be rescored."""
    tree = tmp_path / "tree"
    for label in CLASSES:
        for lesion in range(2):
            write_rgb(tree / label / f"p{lesion}" / f"IMG_{lesion}.png", spot_photo(label, size=32, seed=lesion))
    older = {"data": [], "split_members": {"val": ["folder/nevus/IMG_0.png"], "test": []}}
    newer = {**older, "split_names": SPLIT_NAMING}  # its folder/nevus/IMG_0.png was a photo not in a subfolder
    assert trained_on(older, str(tree)) and not trained_on(newer, str(tree))
    assert [s.within for s in model_splits(older, [str(tree)])["val"]] == ["p0/IMG_0.png"]
    write_rgb(tree / "nevus" / "p1" / "IMG_0.png", spot_photo("nevus", size=32, seed=5))
    with pytest.raises(ValueError, match="2 images named folder/nevus/IMG_0.png.* cannot tell them apart.*retrain"):
        model_splits(older, [str(tree)])


def test_a_photo_is_known_by_its_isic_id_or_its_file_whatever_it_is_named(tmp_path):
    photo = write_rgb(tmp_path / "a.png", spot_photo("nevus", size=32))
    renamed = tmp_path / "IMG_0001.png"
    shutil.copy(photo, renamed)
    assert image_keys(photo) == image_keys(renamed) and len(next(iter(image_keys(photo)))) == 12
    assert image_keys(write_rgb(tmp_path / "b.png", spot_photo("nevus", size=32, seed=1))) != image_keys(photo)
    assert image_keys(tmp_path / "ISIC_0031197.jpg") == {"ISIC_0031197"}  # the id, at any size or encoding
    isic = shutil.copy(photo, tmp_path / "ISIC_0031197.png")  # ... and the file: renamed, it is still known
    assert image_keys(isic) == {"ISIC_0031197"} | image_keys(photo)
    clinical = tmp_path / "c_0123456789abcdef.jpg"  # the project's clinical photos: named after the original's hash
    shutil.copy(photo, clinical)
    assert image_keys(clinical) == image_keys(photo) | {"0123456789ab"}
    assert image_keys(tmp_path / "gone.png") == set()
    assert image_keys(tmp_path / "c_0123456789abcdef.png") == {"0123456789ab"}  # gone: its name's key alone
    assert seen_keys([photo, renamed, clinical]) == sorted(image_keys(clinical))


def test_the_shipped_model_records_the_members_of_the_split_it_records_digests_of():
    meta = load_checkpoint()["meta"]
    for split in ("val", "test"):
        names = meta["split_members"][split]
        assert len(names) == sum(meta["split_counts"][split].values())
        assert hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest() == meta["split_sha256"][split]
    seen = meta["seen_images"]  # HAM10000's 10,015 ISIC ids; each clinical photo's file and original (541 each)
    assert sum(key.startswith("ISIC_") for key in seen) == 10015 and len(seen) == 10015 + 2 * 541


@needs_shared
def test_the_shipped_model_is_scored_on_the_split_it_recorded():
    """The shipped model's split, found by its recorded names in the real data wherever it lies, is the one it was
    trained with (its training part too), though the grouping code has changed since."""
    meta = {**load_checkpoint()["meta"], "data": ["/elsewhere/ham10000", "/elsewhere/clinical"]}  # any machine's
    splits = model_splits(meta, [str(SHARED_DATA / "ham10000"), str(SHARED_DATA / "clinical")])
    assert {k: split_digest(v) for k, v in splits.items()} == meta["split_sha256"]
    paths = [s.path for part in splits.values() for s in part]
    isic_files = {key for p in paths if ISIC_ID.fullmatch(p.stem) for key in image_keys(p) - {p.stem}}
    assert sorted(set(seen_keys(paths)) - isic_files) == meta["seen_images"]  # trained before ISIC files were keyed


def test_a_class_folder_given_for_the_tree_and_loose_images_are_named(tmp_path):
    """Two easy mistakes with a class-per-folder tree: --data pointing at one class's folder, and photos left
    beside the class folders instead of in them."""
    write_rgb(tmp_path / "tree" / "nevus" / "n.png", spot_photo("nevus", size=32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "left out" warning for the class's own photos: the error says it all
        with pytest.raises(FileNotFoundError, match="nevus/ looks like one class's folder"):
            load_class_folders(tmp_path / "tree" / "nevus")
    write_rgb(tmp_path / "tree" / "IMG_1.png", spot_photo("vascular", size=32))
    with pytest.warns(UserWarning, match=r"left out 1 photo\(s\) outside the class folders \(IMG_1.png\): move each"):
        samples = load_class_folders(tmp_path / "tree")
    assert [s.path.name for s in samples] == ["n.png"]


def test_a_ham10000_folder_given_one_level_off_is_named(tmp_path):
    """--data at HAM10000's images folder, or at the folder that holds the HAM10000 folder: not "move each image into
    a class folder" (10,015 of them by hand), but the folder to give."""
    ham = make_ham(tmp_path / "data_ham10000")
    with pytest.raises(FileNotFoundError, match=f"they are HAM10000 images: give {ham}, the folder that holds"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_dataset(ham / "images")
    copied = tmp_path / "isic_only"
    shutil.copytree(ham / "images", copied)  # no metadata anywhere near
    with pytest.raises(FileNotFoundError, match="named as HAM10000 images: give the folder that holds them and HAM"):
        load_dataset(copied)
    with pytest.warns(UserWarning, match="folders data_ham10000, isic_only are not classes"):
        with pytest.raises(FileNotFoundError, match=f"it holds data set folders: give them, --data {ham}\\)"):
            load_dataset(tmp_path)


def test_folders_named_by_ham10000_diagnosis_are_classes(tmp_path):
    """A tree sorted by HAM10000's dx codes (vasc/, nv/, mel/, ...), as people often sort it: each code's class, and
    its code kept as the diagnosis (the report counts melanomas by it); any other folder name is left out."""
    for dx in ("vasc", "NV", "mel", "bcc", "vascular", "unsorted"):
        write_rgb(tmp_path / dx / f"{dx}.png", spot_photo("nevus", size=32))
    with pytest.warns(UserWarning, match=r"folders unsorted are not classes \(vascular, nevus, other, or HAM10000's"):
        samples = load_class_folders(tmp_path)
    assert sorted((s.path.stem, s.label, s.detail) for s in samples) == [
        ("NV", "nevus", "nv"), ("bcc", "other", "bcc"), ("mel", "other", "mel"), ("vasc", "vascular", "vasc"),
        ("vascular", "vascular", "")]
    # A camera's names repeat across the folders of one class (two diagnoses of `other`, or nevus/ and nv/): each
    # photo keeps a name of its own in a recorded split, its folder's code leading it.
    for folder in ("mel", "bcc", "nevus", "NV"):
        write_rgb(tmp_path / folder / "IMG_0001.png", spot_photo("nevus", size=32))
    with pytest.warns(UserWarning):
        samples = load_class_folders(tmp_path)
    names = [sample_name(s) for s in samples]
    assert len(set(names)) == len(names) == 9
    assert {"folder/other/mel/IMG_0001.png", "folder/other/bcc/IMG_0001.png", "folder/nevus/IMG_0001.png",
            "folder/nevus/nv/IMG_0001.png"} <= set(names)


@needs_shared
def test_rebuilding_the_ham10000_split_gives_the_shipped_models_recorded_one():
    """HAM10000's grouping has not changed since the shipped model was trained: splitting it again (7 folds,
    stratified by diagnosis, fold 0 test and fold 1 validation, seed 0) gives the images the model recorded."""
    meta = load_checkpoint()["meta"]
    rebuilt = load_splits([str(SHARED_DATA / "ham10000")], seed=meta["split_seed"])
    for split in ("val", "test"):
        assert sorted(map(sample_name, rebuilt[split])) == \
            sorted(n for n in meta["split_members"][split] if n.startswith("ham10000/"))
