"""Batch scoring: every file gets exactly one row, bad files do not stop the run, resume is exact."""
from __future__ import annotations

import csv
import os

import pytest

from serve import batch
from tests.conftest import spot_photo, write_rgb


def rows(path):
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def messy_folder(tmp_path):
    folder = tmp_path / "photos"
    write_rgb(folder / "red.jpg", spot_photo("vascular", size=160))
    write_rgb(folder / "nested" / "deeper" / "brown.png", spot_photo("nevus", size=160))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "readme.txt").write_text("ignored: not an image suffix")
    os.symlink(folder, folder / "nested" / "loop")  # a symlink loop must not hang the walk
    weird = os.fsencode(str(folder)) + b"/caf\xe9.png"  # a Latin-1 (non-UTF-8) file name
    write_rgb(folder / "tmp.png", spot_photo("other", size=160))
    os.rename(folder / "tmp.png", weird)
    return folder


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def test_scores_every_file_once_and_reports_bad_ones(messy_folder, tmp_path, predictor):
    out = tmp_path / "scores.csv"
    before = snapshot(messy_folder)
    scored, errors = batch.score_folder(predictor, messy_folder, out, progress=False)
    table = rows(out)
    assert (scored, errors) == (3, 2) and len(table) == 5
    assert len({r["path"] for r in table}) == 5
    by_name = {os.path.basename(r["path"]): r for r in table}
    assert by_name["empty.jpg"]["label"] == "error" and "empty" in by_name["empty.jpg"]["error"]
    assert by_name["notes.jpg"]["label"] == "error" and "not a readable image" in by_name["notes.jpg"]["error"]
    good = by_name["red.jpg"]
    assert good["label"] in {"vascular", "nevus", "other", "unsure"} and good["error"] == ""
    total = sum(float(good[k]) for k in ("p_vascular", "p_nevus", "p_other"))
    assert abs(total - 1) < 1e-3
    assert snapshot(messy_folder) == before  # input files untouched, nothing added


def test_resume_after_a_kill_has_no_duplicates_or_gaps(messy_folder, tmp_path, predictor):
    out = tmp_path / "scores.csv"
    batch.score_folder(predictor, messy_folder, out, progress=False)
    complete = rows(out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # killed while writing the 3rd row
    batch.score_folder(predictor, messy_folder, out, resume=True, progress=False)
    resumed = rows(out)
    assert sorted(r["path"] for r in resumed) == sorted(r["path"] for r in complete)


def test_heatmaps_are_written(messy_folder, tmp_path, predictor):
    batch.score_folder(predictor, messy_folder, tmp_path / "s.csv", heatmaps=tmp_path / "maps", progress=False)
    assert len(list((tmp_path / "maps").glob("*.png"))) == 3


def test_cli_exit_codes(tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"junk")
    assert batch.main([str(bad), "--out", str(tmp_path / "s.csv")]) == 1  # nothing could be scored
    assert batch.main([str(tmp_path / "missing")]) == 2
    monkeypatch.chdir(bad)
    assert batch.main([str(bad)]) == 2  # default ./scores.csv would land in the input folder
    good = tmp_path / "good"
    write_rgb(good / "a.png", spot_photo("nevus"))
    assert batch.main([str(good), "--out", str(tmp_path / "ok.csv")]) == 0
    assert len(rows(tmp_path / "ok.csv")) == 1
