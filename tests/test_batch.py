"""Batch scoring: every file gets exactly one row, bad files do not stop the run, resume is exact."""
from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.images import ImageError, read_image
from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint
from serve import batch
from tests.conftest import COLOURS, ROOT, ROTATED_HEIC, spot_photo, write_rgb


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
    assert all(None not in r and None not in r.values() for r in table)  # every row has exactly the columns
    for bad in ("empty.jpg", "notes.jpg"):  # the reason, whole (commas in it quoted, not split into columns)
        with pytest.raises(ImageError) as reason:
            read_image(messy_folder / bad)
        assert by_name[bad]["label"] == "error" and by_name[bad]["error"] == str(reason.value)
    for name in ("red.jpg", "brown.png"):  # each column holds what the predictor says for that file
        row, expected = by_name[name], predictor.predict_file(Path(by_name[name]["path"]))
        assert row["label"] == expected.label and row["error"] == "" and row["reason"] == expected.reason
        assert float(row["confidence"]) == pytest.approx(expected.confidence, abs=1e-4)
        for group, p in expected.probabilities.items():
            assert float(row[f"p_{group}"]) == pytest.approx(p, abs=1e-4)
    good = by_name["red.jpg"]
    x0, y0, x1, y1 = map(int, good["frame"].split())  # the spot (radius 18, centred) framed, not the whole photo
    assert good["spots"] == "1" and 0 < x0 < 80 < x1 < 160 and 0 < y0 < 80 < y1 < 160
    assert by_name["empty.jpg"]["spots"] == by_name["empty.jpg"]["frame"] == ""
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


def test_rows_say_how_many_spots_were_seen_and_what_was_checked(tmp_path, predictor):
    folder = tmp_path / "photos"
    plain = np.clip(np.random.default_rng(0).normal((225, 180, 160), 6, (200, 200, 3)), 0, 255).astype(np.uint8)
    two = spot_photo("nevus", size=200, radius=14, centre=(60, 100))
    cv2.circle(two, (140, 100), 14, COLOURS["nevus"], -1, cv2.LINE_AA)
    write_rgb(folder / "plain.png", plain)
    write_rgb(folder / "two.png", two)
    batch.score_folder(predictor, folder, tmp_path / "s.csv", progress=False)
    by_name = {os.path.basename(r["path"]): r for r in rows(tmp_path / "s.csv")}
    assert (by_name["plain.png"]["spots"], by_name["plain.png"]["frame"]) == ("0", "0 0 200 200")
    assert by_name["two.png"]["spots"] == "2"
    x0, _, x1, _ = map(int, by_name["two.png"]["frame"].split())
    assert x1 - x0 < 100 and (x1 <= 100 or x0 >= 100)  # one of the two, not both


def test_resume_tries_the_files_that_could_not_be_read_again(messy_folder, tmp_path, predictor, monkeypatch):
    """--resume had skipped error rows: a file fixed since (a copy finished, a permission given) stayed an error
    until the whole folder was scored again with --overwrite. Now it is tried again and its row replaced, every other
    row kept as it was; a run stopped while the CSV is rewritten leaves it whole."""
    out = tmp_path / "scores.csv"
    (messy_folder / "late.jpg").write_bytes(b"")  # a photo still being copied
    assert batch.score_folder(predictor, messy_folder, out, progress=False) == (3, 3)
    write_rgb(messy_folder / "late.jpg", spot_photo("nevus", size=160))  # its copy done
    (messy_folder / "empty.jpg").unlink()  # gone since: its row stays
    before = out.read_bytes()
    kept = [line for line in before.splitlines(keepends=True) if b"late.jpg" not in line]
    with monkeypatch.context() as stopped:  # a Ctrl+C as the rewritten CSV takes the old one's place
        stopped.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            batch.score_folder(predictor, messy_folder, out, resume=True, progress=False)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["photos", "scores.csv"]
    with monkeypatch.context() as full:  # a disk that fills up while the copy is written: no copy left behind
        full.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        with pytest.raises(OSError, match="No space left"):
            batch.score_folder(predictor, messy_folder, out, resume=True, progress=False)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["photos", "scores.csv"]
    (tmp_path / "a file").write_text("")  # a --heatmaps folder that cannot be made: refused, the error rows kept
    with pytest.raises(OSError):
        batch.score_folder(predictor, messy_folder, out, resume=True, heatmaps=tmp_path / "a file" / "maps",
                           progress=False)
    assert out.read_bytes() == before
    (tmp_path / "a file").unlink()
    os.rename(out, tmp_path / "kept.csv")  # --out a link to the CSV: the file it points to is the one rewritten
    os.symlink(tmp_path / "kept.csv", out)
    replace, others = os.replace, []

    def another_run_then_replace(copy, target):  # a second run starting as the copy takes the CSV's place
        with open(target, "a") as f:
            with pytest.raises(batch.BusyError):  # the old file is still locked by this run: no rows lost into it
                batch.write_alone(f, target)
        others.append(target)
        replace(copy, target)

    monkeypatch.setattr(os, "replace", another_run_then_replace)
    assert batch.score_folder(predictor, messy_folder, out, resume=True, progress=False) == (1, 1)  # and notes.jpg
    assert others == [tmp_path / "kept.csv"]
    assert out.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["kept.csv", "photos", "scores.csv"]
    after = out.read_bytes().splitlines(keepends=True)
    by_name = {os.path.basename(r["path"]): r for r in rows(out)}
    assert len(by_name) == len(after) - 1 == 6 and by_name["late.jpg"]["label"] != "error"
    assert by_name["empty.jpg"]["label"] == by_name["notes.jpg"]["label"] == "error"
    assert ([line for line in after if b"notes.jpg" not in line and b"late.jpg" not in line]
            == [line for line in kept if b"notes.jpg" not in line])  # the other rows byte for byte
    assert batch.score_folder(predictor, messy_folder, out, resume=True, progress=False) == (0, 1)  # notes.jpg again


def test_resume_refuses_a_csv_with_other_columns(messy_folder, tmp_path):
    out = tmp_path / "old.csv"
    old = "path,label,confidence,p_vascular,p_nevus,p_other,reason,error\r\nx.jpg,nevus,0.9,0,0.9,0.1,,\r\ny.jp"
    out.write_bytes(old.encode())  # ends in a half-written row
    assert batch.main([str(messy_folder), "--out", str(out), "--resume"]) == 2
    assert out.read_bytes() == old.encode()  # untouched: nothing cut, nothing appended under the wrong header


def test_resume_matches_files_however_the_folder_is_spelled(messy_folder, tmp_path, predictor, monkeypatch):
    out = tmp_path / "scores.csv"
    batch.score_folder(predictor, messy_folder, out, progress=False)  # absolute paths
    monkeypatch.chdir(messy_folder.parent)
    batch.score_folder(predictor, Path("photos/./nested/.."), out, resume=True, progress=False)
    assert len(rows(out)) == 5  # nothing scored twice

    # Scored by a relative name, resumed from another working directory: rows hold absolute paths.
    relative = tmp_path / "relative.csv"
    batch.score_folder(predictor, Path("photos"), relative, progress=False)
    monkeypatch.chdir(tmp_path.parent)
    assert batch.score_folder(predictor, messy_folder, relative, resume=True, progress=False) == (0, 2)  # the errors
    assert len(rows(relative)) == 5 and all(os.path.isabs(r["path"]) for r in rows(relative))


@pytest.mark.parametrize("line_break", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_resume_after_a_kill_inside_a_file_name_with_a_line_break(tmp_path, predictor, line_break):
    """Rows end in CRLF, so a bare LF in a name is easy; a CRLF in a quoted name looks like a row's end."""
    folder = tmp_path / "photos"
    names = ["a.png", f"new{line_break}line.png", "z.png"]
    for name in names:
        write_rgb(folder / name, spot_photo("nevus", size=120))
    out = tmp_path / "scores.csv"
    batch.score_folder(predictor, folder, out, progress=False)
    data = out.read_bytes()
    cut = f"new{line_break}".encode()
    out.write_bytes(data[: data.index(cut) + len(cut)])  # killed just after the line break inside the name
    batch.score_folder(predictor, folder, out, resume=True, progress=False)
    assert sorted(os.path.basename(r["path"]) for r in rows(out)) == sorted(names)
    assert all(r["label"] in ("vascular", "nevus", "other", "unsure") for r in rows(out))


def test_resume_refuses_a_file_that_is_not_a_scores_csv(messy_folder, tmp_path):
    out = tmp_path / "other.csv"
    out.write_bytes(b"\x8f\x01 no newline in here")
    assert batch.main([str(messy_folder), "--out", str(out), "--resume"]) == 2
    assert out.read_bytes() == b"\x8f\x01 no newline in here"


def test_heatmaps_mirror_the_folder_and_a_failed_one_does_not_stop_the_run(messy_folder, tmp_path, predictor):
    write_rgb(messy_folder / "tiny.png", spot_photo("nevus", size=20))  # scored "unsure": too small to look at
    maps = tmp_path / "maps"
    batch.score_folder(predictor, messy_folder, tmp_path / "s.csv", heatmaps=maps, progress=False)
    written = sorted(str(p.relative_to(maps)) for p in maps.rglob("*.png"))  # none on the tiny one, as on the page
    assert written == sorted(["red.jpg.png", "nested/deeper/brown.png.png", os.fsdecode(b"caf\xe9.png.png")])
    assert {r["label"] for r in rows(tmp_path / "s.csv") if r["path"].endswith("tiny.png")} == {"unsure"}
    (messy_folder / "tiny.png").unlink()

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "nested").write_text("a file where the heatmaps' subfolder should go")
    scored, _ = batch.score_folder(predictor, messy_folder, tmp_path / "t.csv", heatmaps=blocked, progress=False)
    assert scored == 3 and len(rows(tmp_path / "t.csv")) == 5  # the run went on past the heatmap it could not write
    assert (blocked / "red.jpg.png").is_file()


def test_heatmaps_written_inside_the_input_folder_are_not_scored_as_photos(messy_folder, tmp_path, predictor):
    maps = messy_folder / "maps"
    for out in ("first.csv", "second.csv"):
        assert batch.main([str(messy_folder), "--out", str(tmp_path / out), "--heatmaps", str(maps)]) == 0
        assert len(rows(tmp_path / out)) == 5  # the photos only, not last run's heatmaps
    assert len(list(maps.rglob("*.png"))) == 3
    # A later run without --heatmaps leaves them out too, and so does scoring the folder above.
    assert batch.main([str(messy_folder), "--out", str(tmp_path / "third.csv")]) == 0
    assert len(rows(tmp_path / "third.csv")) == 5
    assert batch.main([str(messy_folder.parent), "--out", str(tmp_path / "above.csv")]) == 0
    assert not any("maps" in Path(r["path"]).parts for r in rows(tmp_path / "above.csv"))
    # The heatmaps folder itself can still be scored on purpose.
    assert batch.main([str(maps), "--out", str(tmp_path / "maps.csv")]) == 0
    assert len(rows(tmp_path / "maps.csv")) == 3


def test_heatmaps_into_the_input_folder_itself_are_refused(messy_folder, tmp_path):
    before = snapshot(messy_folder)
    assert batch.main([str(messy_folder), "--out", str(tmp_path / "s.csv"), "--heatmaps", str(messy_folder)]) == 2
    assert snapshot(messy_folder) == before


def test_a_heatmaps_folder_that_holds_photos_of_its_own_is_refused(messy_folder, tmp_path):
    """Pointing --heatmaps at a subfolder of photos had mixed the heatmaps in and left its photos out of the CSV, in
    that run and every later one."""
    before = snapshot(messy_folder)
    out = tmp_path / "s.csv"
    assert batch.main([str(messy_folder), "--out", str(out), "--heatmaps", str(messy_folder / "nested")]) == 2
    assert snapshot(messy_folder) == before and not out.exists()


def test_a_folder_of_heatmaps_alone_is_taken_again_without_its_mark(messy_folder, tmp_path):
    """Versions before December 7, 2026 marked a heatmaps folder only inside the input folder: an older run's
    heatmaps folder holds heatmaps alone, and is no folder of photos to refuse."""
    maps = tmp_path / "maps"
    assert batch.main([str(messy_folder), "--out", str(tmp_path / "s.csv"), "--heatmaps", str(maps)]) == 0
    (maps / batch.HEATMAPS_MARK).unlink()
    assert batch.main([str(messy_folder), "--out", str(tmp_path / "s.csv"), "--heatmaps", str(maps), "--overwrite"]) == 0
    (maps / batch.HEATMAPS_MARK).unlink()
    write_rgb(maps / "photo.png", spot_photo("nevus", size=64))  # but a photo among them is one of its own
    assert batch.main([str(messy_folder), "--out", str(tmp_path / "t.csv"), "--heatmaps", str(maps)]) == 2


def test_a_refused_run_leaves_no_heatmaps_folder(messy_folder, tmp_path):
    not_scores = tmp_path / "notes.csv"
    not_scores.write_text("not,a,scores,file\n")
    assert batch.main([str(messy_folder), "--out", str(not_scores), "--resume", "--heatmaps", str(tmp_path / "maps")]) == 2
    assert not (tmp_path / "maps").exists()


def test_resume_knows_a_photo_by_the_file_whichever_folder_link_reached_it(tmp_path, predictor):
    """A link added to the folder (sorted before the real folder) must not score again what the CSV has."""
    folder = tmp_path / "photos"
    write_rgb(folder / "z_real" / "a.png", spot_photo("nevus", size=160))
    out = tmp_path / "s.csv"
    assert batch.score_folder(predictor, folder, out, progress=False) == (1, 0)
    os.symlink(folder / "z_real", folder / "a_link")
    assert batch.score_folder(predictor, folder, out, resume=True, progress=False) == (0, 0)
    assert len(rows(out)) == 1


def test_a_heatmaps_folder_anywhere_is_left_out_of_later_runs(messy_folder, tmp_path):
    study = tmp_path / "study"
    shutil.move(messy_folder, study / "photos")
    assert batch.main([str(study / "photos"), "--out", str(tmp_path / "s.csv"), "--heatmaps", str(study / "maps")]) == 0
    assert batch.main([str(study), "--out", str(tmp_path / "all.csv")]) == 0  # the folder above both
    assert len(rows(tmp_path / "all.csv")) == 5 and not any("maps" in Path(r["path"]).parts
                                                            for r in rows(tmp_path / "all.csv"))


def test_a_heatmaps_folder_that_cannot_be_made_leaves_no_csv(messy_folder, tmp_path, capsys):
    a_file = write_rgb(tmp_path / "a.png", spot_photo("nevus", size=64))
    out = tmp_path / "s.csv"
    assert batch.main([str(messy_folder), "--out", str(out), "--heatmaps", str(a_file / "maps")]) == 2
    assert "cannot write" in capsys.readouterr().err and not out.exists()


def test_a_linked_in_folder_is_scored_once(messy_folder, tmp_path, predictor):
    """Clinics link folders in from shares, as training allows; the messy folder's own loop is still walked once."""
    write_rgb(tmp_path / "share" / "clinicB" / "b.png", spot_photo("nevus", size=160))
    os.symlink(tmp_path / "share" / "clinicB", messy_folder / "clinicB")
    os.symlink(tmp_path / "share" / "clinicB", messy_folder / "nested" / "again")
    scored, errors = batch.score_folder(predictor, messy_folder, tmp_path / "s.csv", progress=False)
    assert (scored, errors) == (4, 2)
    assert [os.path.basename(r["path"]) for r in rows(tmp_path / "s.csv")].count("b.png") == 1


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
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
    assert batch.main([str(good), "--out", str(tmp_path)]) == 2  # --out is a folder, not a CSV
    capsys.readouterr()
    assert batch.main([str(good), "--out", f"{tmp_path / 'new'}/"]) == 2  # a folder to be, named as one
    assert f"--out {tmp_path / 'new'}/ names a folder" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert batch.main([str(good), "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err
    for photo in (good / "a.png", tmp_path / "typo.jpg"):  # a photo, or a name that says one: never written over
        assert batch.main([str(good), "--out", str(photo), "--overwrite"]) == 2
        assert "is named as a photo" in capsys.readouterr().err
    assert read_image(good / "a.png").shape[:2] == (160, 160) and not (tmp_path / "typo.jpg").exists()
    assert batch.main([str(good / "a.png"), "--out", str(tmp_path / "one.csv")]) == 2
    assert "is a file: give the folder" in capsys.readouterr().err
    assert batch.main([str(tmp_path / "missing"), "--out", str(tmp_path / "one.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    capsys.readouterr()
    assert batch.main([str(bad), "--out", str(tmp_path / "s.csv"), "--resume"]) == 1  # still nothing scored
    said = capsys.readouterr()  # its rows are all errors: tried again, not taken as done
    assert "trying again 1 file that could not be read before" in said.out and "nothing left" not in said.out
    assert "scored 0 images; 1 could not be read" in said.out and "error: no image could be scored" in said.err
    assert len(rows(tmp_path / "s.csv")) == 1


def test_cli_messages(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert batch.main([str(empty), "--out", str(tmp_path / "s.csv")]) == 1
    assert "no image files" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()

    write_rgb(tmp_path / "good" / "a.png", spot_photo("nevus"))
    # Files not named as photos get no row: the run says so, naming them (the CSV it writes there aside).
    (tmp_path / "good" / "raw").mkdir()
    for name in ("raw/IMG_0002.dng", "notes.pdf"):
        (tmp_path / "good" / name).write_bytes(b"not scored")
    os.symlink("loop", tmp_path / "good" / "loop")  # a link to itself: named, not a crash
    assert batch.main([str(tmp_path / "good"), "--out", str(tmp_path / "good" / "s.csv")]) == 0
    said = capsys.readouterr().out
    assert f"note: 3 other files under {tmp_path / 'good'} were not scored, not being named as photos (loop, " \
           "notes.pdf, raw/IMG_0002.dng); SpotCheck reads .jpg" in said
    assert batch.main([str(tmp_path / "good"), "--out", str(tmp_path / "good" / "s.csv"), "--overwrite"]) == 0
    assert "s.csv" not in capsys.readouterr().out.split("note:")[1]  # its own CSV is not one of them
    for name in ("raw/IMG_0002.dng", "notes.pdf", "s.csv", "loop"):
        (tmp_path / "good" / name).unlink()
    assert batch.main([str(tmp_path / "good"), "--out", str(tmp_path / "s.csv")]) == 0
    assert "note:" not in capsys.readouterr().out
    (tmp_path / "s.csv").unlink()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "score_folder", interrupted)
    assert batch.main([str(tmp_path / "good"), "--out", str(tmp_path / "s.csv")]) == 130
    assert "--resume" in capsys.readouterr().err


def test_folders_that_cannot_be_read_are_named_at_the_end(tmp_path, monkeypatch, capsys):
    """A folder the walk cannot open is warned of when it is met, which the progress bar then scrolls away: the
    closing summary names it too, as a count of what was not scored. (Simulated: the tests may run as root.)"""
    for name in ("a.png", "locked/b.png", "locked2/c.png"):
        write_rgb(tmp_path / "in" / name, spot_photo("nevus"))
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.path.realpath(path)) in ("locked", "locked2", "all_locked"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    os.symlink("locked", tmp_path / "in" / "alias")  # the same folder by another name: counted once
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.warns(UserWarning, match="skipped a folder that cannot be read"):
        assert batch.main([str(tmp_path / "in"), "--out", str(tmp_path / "s.csv")]) == 0
    said = capsys.readouterr()
    assert [row["path"] for row in rows(tmp_path / "s.csv")] == [str(tmp_path / "in" / "a.png")]
    assert (f"note: 2 folders under {tmp_path / 'in'} could not be read, so any photos in them were not scored "
            "(locked: Permission denied, locked2: Permission denied)") in said.out

    # Every photo in a folder that cannot be read: no image to score, and the error says why there is none.
    (tmp_path / "all_locked").mkdir()
    assert batch.main([str(tmp_path / "all_locked"), "--out", str(tmp_path / "t.csv")]) == 1
    said = capsys.readouterr().err
    assert "error: no image files" in said and (f"note: 1 folder under {tmp_path / 'all_locked'} could not be read, "
                                                f"so any photos in them were not scored ({tmp_path / 'all_locked'}: "
                                                "Permission denied)") in said


def test_iphone_heic_photos_are_scored(tmp_path, predictor):
    folder = tmp_path / "iphone"
    folder.mkdir()
    (folder / "IMG_0001.HEIC").write_bytes(ROTATED_HEIC)
    (folder / "IMG_0002.heic").write_bytes(ROTATED_HEIC[:300])  # cut off in the copy
    out = tmp_path / "scores.csv"
    assert batch.score_folder(predictor, folder, out, progress=False) == (1, 1)
    by_name = {os.path.basename(r["path"]): r for r in rows(out)}
    assert by_name["IMG_0001.HEIC"]["label"] in ("vascular", "nevus", "other", "unsure")
    # Upright, 48 wide and 64 high: its red half fills much of it, so the frame is the 48-px square around it.
    assert by_name["IMG_0001.HEIC"]["frame"] == "0 16 48 64"
    assert by_name["IMG_0002.heic"]["label"] == "error" and "not a readable image" in by_name["IMG_0002.heic"]["error"]


def test_an_existing_output_is_kept_unless_resumed_or_overwritten(messy_folder, tmp_path):
    """A finished or interrupted run's CSV, or a photo named by a typo, is not replaced unasked."""
    out = tmp_path / "scores.csv"
    assert batch.main([str(messy_folder), "--out", str(out)]) == 0
    before = out.read_bytes()
    assert batch.main([str(messy_folder), "--out", str(out)]) == 2 and out.read_bytes() == before
    photo = write_rgb(tmp_path / "IMG_1.png", spot_photo("nevus", size=64))
    kept = photo.read_bytes()
    assert batch.main([str(messy_folder), "--out", str(photo)]) == 2 and photo.read_bytes() == kept
    assert batch.main([str(messy_folder), "--out", str(out), "--overwrite"]) == 0
    assert len(rows(out)) == len(list(batch.find_images(messy_folder)))


def test_resuming_a_finished_run_says_there_is_nothing_left(messy_folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert batch.main([str(messy_folder), "--out", str(out)]) == 0
    said = capsys.readouterr().out  # and what the CSV holds, answer by answer
    counts = {label: sum(r["label"] == label for r in rows(out)) for label in batch.SUMMARY_LABELS}
    assert counts["error"] == 2 and f"{out} holds 5 rows: " + ", ".join(
        f"{n} {label}" for label, n in counts.items() if n) in said
    assert batch.main([str(messy_folder), "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out  # the two files that could not be read are tried again, and fail again
    assert "trying again 2 files that could not be read before" in said and "scored 0 images; 2 could not" in said
    for bad in ("empty.jpg", "notes.jpg"):  # gone: their rows stay, and nothing is left to try
        (messy_folder / bad).unlink()
    assert batch.main([str(messy_folder), "--out", str(out), "--resume"]) == 0
    assert "nothing left to score: every image under" in capsys.readouterr().out and len(rows(out)) == 5


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--workers", "-1"], ["--threads", "x"],
                                   ["--resume", "--overwrite"]])
def test_bad_numbers_and_flags_are_refused_before_scoring(messy_folder, tmp_path, flags):
    with pytest.raises(SystemExit) as stop:
        batch.main([str(messy_folder), "--out", str(tmp_path / "s.csv"), *flags])
    assert stop.value.code == 2 and not (tmp_path / "s.csv").exists()


def test_outputs_that_cannot_be_written_are_a_message_not_a_traceback(messy_folder, tmp_path, capsys):
    a_file = write_rgb(tmp_path / "a.png", spot_photo("nevus", size=64))
    assert batch.main([str(messy_folder), "--out", str(a_file / "s.csv")]) == 2
    assert f"cannot write {a_file}: it is a file, not a folder" in capsys.readouterr().err  # had been "File exists"
    assert batch.main([str(messy_folder), "--out", str(a_file / "sub" / "s.csv")]) == 2  # "Not a directory"
    assert f"cannot write {a_file / 'sub'}: {a_file} is a file, not a folder" in capsys.readouterr().err
    assert batch.main([str(messy_folder), "--out", str(tmp_path / "s.csv"), "--heatmaps", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_hidden_files_and_macos_copies_are_not_scored(tmp_path):
    folder = tmp_path / "photos"
    write_rgb(folder / "spot.png", spot_photo("nevus", size=64))
    write_rgb(folder / "._spot.png", spot_photo("nevus", size=64))
    write_rgb(folder / "__MACOSX" / "spot.png", spot_photo("nevus", size=64))
    write_rgb(folder / ".thumbnails" / "spot.png", spot_photo("nevus", size=64))
    assert [p.relative_to(folder) for p in batch.find_images(folder)] == [Path("spot.png")]


def test_each_row_names_its_model_and_a_resume_refuses_another(messy_folder, tmp_path, predictor):
    """Resuming a run with another --checkpoint would mix two models' answers in one file, with nothing to tell them
    apart; each row says which model scored it, and a resume with another model is refused."""
    other = tmp_path / "other.pt"
    checkpoint = load_checkpoint(DEFAULT_CHECKPOINT)
    checkpoint["calibration"] = {**checkpoint["calibration"], "temperature": 2.0}  # another model, as far as a CSV knows
    save_checkpoint(other, checkpoint)
    out = tmp_path / "scores.csv"
    batch.score_folder(predictor, messy_folder, out, progress=False)
    data = out.read_bytes()
    out.write_bytes(data[: data.index(b"\r\n", data.index(b"\r\n") + 2) + 2])  # the header and one row: cut off
    shipped = (DEFAULT_CHECKPOINT.parent / (DEFAULT_CHECKPOINT.name + ".sha256")).read_text().split()[0]
    assert {r["model"] for r in rows(out)} == {shipped[:12]}
    assert batch.main([str(messy_folder), "--out", str(out), "--resume", "--checkpoint", str(other)]) == 2
    assert len(rows(out)) == 1  # left as it was
    assert batch.main([str(messy_folder), "--out", str(out), "--resume"]) == 0
    assert {r["model"] for r in rows(out)} == {shipped[:12]} and len(rows(out)) == len(list(batch.find_images(messy_folder)))


@pytest.mark.skipif(batch.fcntl is None, reason="the CSV is locked where the system has fcntl (Linux, macOS)")
def test_a_csv_another_run_is_writing_is_refused_and_left_as_it_is(messy_folder, tmp_path, predictor, capsys):
    """Two runs into one CSV interleaved their rows (a --resume started beside a running batch: 752 rows for 600
    files, and a garbled one): the second is refused before it reads or writes a byte."""
    out = tmp_path / "scores.csv"
    batch.score_folder(predictor, messy_folder, out, progress=False)
    before = out.read_bytes()
    with out.open("a") as running:  # the other run, holding its lock
        batch.fcntl.flock(running.fileno(), batch.fcntl.LOCK_EX | batch.fcntl.LOCK_NB)
        for flags in (["--resume"], ["--overwrite"]):
            assert batch.main([str(messy_folder), "--out", str(out), *flags]) == 2
            assert "being written by another batch run" in capsys.readouterr().err and out.read_bytes() == before
    assert batch.main([str(messy_folder), "--out", str(out), "--resume"]) == 0  # once it is done


def test_the_csv_is_utf8_whatever_the_file_names(messy_folder, tmp_path, predictor):
    """A Latin-1 file name (old Windows zips, network shares) had made the whole CSV unreadable to pandas."""
    out = tmp_path / "s.csv"
    batch.score_folder(predictor, messy_folder, out, progress=False)
    text = out.read_bytes().decode("utf-8")  # strict
    names = [os.path.basename(r["path"]) for r in csv.DictReader(text.splitlines())]
    assert "caf\\xe9.png" in names
    assert batch.score_folder(predictor, messy_folder, out, resume=True, progress=False) == (0, 2)  # known again
    assert "caf\\xe9.png" in [os.path.basename(r["path"]) for r in rows(out)] and len(rows(out)) == 5


def test_a_link_to_a_photo_in_the_folder_is_scored_once_fresh_or_resumed(tmp_path, predictor):
    folder = tmp_path / "photos"
    write_rgb(folder / "A" / "p.png", spot_photo("nevus", size=160))
    write_rgb(folder / "A" / "q.png", spot_photo("vascular", size=160))
    (folder / "B").mkdir()
    os.symlink(folder / "A" / "p.png", folder / "B" / "p_link.png")
    out = tmp_path / "s.csv"
    assert batch.score_folder(predictor, folder, out, progress=False) == (2, 0)
    fresh = [r["path"] for r in rows(out)]
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]))  # killed after the first row
    assert batch.score_folder(predictor, folder, out, resume=True, progress=False) == (1, 0)
    assert [r["path"] for r in rows(out)] == fresh


STOPPED = """
import os, signal, sys, time
from data.flags import interrupt_on_termination
for name in ("SIGTERM", "SIGHUP"):  # as a shell starts a program (pytest itself may run under nohup)
    signal.signal(getattr(signal, name), signal.SIG_DFL)
if sys.argv[1] == "nohup":
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `nohup` starts a program
interrupt_on_termination()
for name in sys.argv[2:]:
    try:
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(0.5)  # a signal whose handler raises is acted on before this ends
        print(name, "ignored")
    except KeyboardInterrupt:
        print(name, "interrupted")
"""


def test_a_kill_stops_a_run_as_ctrl_c_does_and_nohup_still_holds():
    """Batch scoring and the web server stop on SIGTERM and SIGHUP as on Ctrl+C (with the hint to --resume; with
    their uploads deleted), but a run started under `nohup` must survive its terminal closing."""
    def run(*args: str) -> str:
        return subprocess.run([sys.executable, "-c", STOPPED, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60).stdout

    assert run("plain", "SIGTERM", "SIGHUP").split("\n")[:2] == ["SIGTERM interrupted", "SIGHUP interrupted"]
    assert run("nohup", "SIGHUP", "SIGTERM").split("\n")[:2] == ["SIGHUP ignored", "SIGTERM interrupted"]


def test_a_heatmap_cut_short_by_a_full_disk_is_removed_and_counted(messy_folder, tmp_path, predictor, monkeypatch,
                                                                    capsys):
    def half_then_full(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    maps = tmp_path / "maps"
    assert batch.score_folder(predictor, messy_folder, tmp_path / "s.csv", heatmaps=maps, progress=False) == (3, 2)
    assert not list(maps.rglob("*.png"))
    assert "3 heatmaps could not be written" in capsys.readouterr().err


def test_a_full_disk_says_the_rows_are_kept_and_how_to_go_on(messy_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.csv"

    def full(predictor, folder, out, **kwargs):
        out.write_text(",".join(batch.FIELDS) + "\r\n")
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(batch, "score_folder", full)
    assert batch.main([str(messy_folder), "--out", str(out)]) == 1  # work that failed, as in training
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err


def test_resume_into_a_new_csv_writes_its_header(tmp_path, predictor):
    write_rgb(tmp_path / "photos" / "a.png", spot_photo("nevus", size=160))
    out = tmp_path / "new.csv"
    assert batch.score_folder(predictor, tmp_path / "photos", out, resume=True, progress=False) == (1, 0)
    assert out.read_text().startswith(",".join(batch.FIELDS))


def test_resume_through_another_link_to_the_folder_scores_nothing_twice(tmp_path, predictor):
    folder = tmp_path / "photos"
    write_rgb(folder / "a.png", spot_photo("nevus", size=160))
    os.symlink(folder, tmp_path / "share")  # the same folder, reached as a mounted share
    out = tmp_path / "s.csv"
    batch.score_folder(predictor, tmp_path / "share", out, progress=False)
    assert batch.score_folder(predictor, folder, out, resume=True, progress=False) == (0, 0)


def test_two_names_that_print_alike_in_the_csv_are_two_files(tmp_path, predictor):
    """The Latin-1 byte \xe9 is written as the text `\\xe9`, which is also a name of its own: both files get a row."""
    folder = tmp_path / "photos"
    write_rgb(folder / "caf\\xe9.png", spot_photo("nevus", size=160))
    write_rgb(folder / "tmp.png", spot_photo("nevus", size=160))
    os.rename(folder / "tmp.png", os.fsencode(str(folder)) + b"/caf\xe9.png")
    assert batch.score_folder(predictor, folder, tmp_path / "s.csv", progress=False) == (2, 0)


def test_the_summary_of_one_photo_says_one_row(tmp_path, capsys):
    write_rgb(tmp_path / "photos" / "a.png", spot_photo("nevus", size=64))
    assert batch.main([str(tmp_path / "photos"), "--out", str(tmp_path / "s.csv")]) == 0
    said = capsys.readouterr().out
    assert "scored 1 image; " in said and f"{tmp_path / 's.csv'} holds 1 row: 1 " in said  # had been "1 rows"


def test_a_folder_named_like_a_photo_is_walked_into_not_scored(tmp_path):
    inside = write_rgb(tmp_path / "photos" / "visit.jpg" / "a.png", spot_photo("nevus", size=64))
    assert batch.main([str(tmp_path / "photos"), "--out", str(tmp_path / "s.csv")]) == 0
    assert [(r["path"], r["error"]) for r in rows(tmp_path / "s.csv")] == [(str(inside), "")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_named_like_a_photo_gets_an_error_row_and_does_not_hang_the_run(tmp_path):
    """Opened to be read, a pipe waits for a writer that never comes: the whole run would hang on it."""
    photo = write_rgb(tmp_path / "photos" / "a.png", spot_photo("nevus", size=64))
    os.mkfifo(tmp_path / "photos" / "b.jpg")
    assert batch.main([str(tmp_path / "photos"), "--out", str(tmp_path / "s.csv")]) == 0
    assert [(r["path"], r["label"] == "error", r["error"]) for r in rows(tmp_path / "s.csv")] == [
        (str(photo), False, ""), (str(tmp_path / "photos" / "b.jpg"), True, "not a regular file")]
