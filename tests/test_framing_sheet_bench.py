"""bench.framing_sheet finds the photos on which the plain and the flattened framing disagree, and draws them."""
from __future__ import annotations

import csv

import cv2

from bench.framing_sheet import TILE, main
from tests.conftest import make_clinical, shaded_photo, write_rgb


def test_a_shaded_photo_is_the_one_the_two_framings_disagree_on(tmp_path):
    clinical = make_clinical(tmp_path / "clinical")  # evenly lit spots: both framings agree
    write_rgb(clinical / "images" / "c_shaded.jpg", shaded_photo())  # the shade wins the plain framing
    with (clinical / "labels.csv").open("a", newline="") as f:
        csv.writer(f).writerow(["c_shaded.jpg", "vascular", "sd198_subset", "Angioma", "o/r@1:Angioma/x.jpg"])
    differing = main(["--clinical", str(clinical), "--out", str(tmp_path / "sheets")])
    assert differing == {"vascular": 1, "nevus": 0, "other": 0}
    sheet = cv2.imread(str(tmp_path / "sheets" / "framing_vascular.png"))
    assert sheet.shape[0] == TILE[1] + 4 and sheet.shape[1] == 4 * (2 * TILE[0] + 4)  # one pair, padded to a row
    assert (tmp_path / "sheets" / "framing_vascular.txt").read_text() == "0 c_shaded.jpg Angioma\n"
    assert not (tmp_path / "sheets" / "framing_nevus.png").exists()
