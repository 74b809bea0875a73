"""The web page's logic, without a browser: answers, friendly errors, uploads not kept."""
from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest

import serve.app
from model.checkpoint import DEFAULT_CHECKPOINT
from data.framing import Framing
from data.presets import EvalSettings
from model.predictor import Prediction, Predictor, overlay_heatmap
from serve.app import (PageHandlers, browser_copy, build_app, check_frame, check_spot, frame_note, frame_percent,
                       framing_view, moved_frame)
from serve.batch import score_folder
from serve.memory import HeldPhoto, LatestPhoto
from serve.guard import RequestGuard
from serve.outputs import OutputFiles
from serve.uploads import delete_older
from serve.guidance import CAUTION, DISCLAIMER, GUIDANCE, HEADLINES, WAITING
import data.images
import data.framing
from data.images import ImageError, ImageTooLarge, read_image
from tests.conftest import COLOURS, ROOT, ROTATED_HEIC, shaded_photo, spot_photo, write_rgb


@pytest.fixture
def uploads(tmp_path, monkeypatch) -> Path:
    """Gradio's upload folder for the apps a test builds: the page's handlers read files inside it only."""
    folder = tmp_path / "uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def judging() -> Predictor:
    """The shipped model with its out-of-distribution check off: the synthetic photos, unlike its training photos,
    are judged, so that the page's bars can be compared with batch scoring's probabilities."""
    predictor = Predictor(DEFAULT_CHECKPOINT)
    predictor.calibration = dataclasses.replace(predictor.calibration, ood_distance_max=float("inf"))
    return predictor


def test_a_photo_gets_an_answer_and_the_upload_is_deleted(tmp_path, predictor):
    upload = write_rgb(tmp_path / "upload.png", spot_photo("nevus", size=200))
    answer = check_spot(predictor, str(upload))
    assert any(headline in answer.summary for headline in HEADLINES.values())
    assert "Why:" in answer.summary and "The spot was found and framed." in answer.summary
    assert set(answer.probabilities) == {"vascular", "nevus", "other"}
    assert answer.heatmap is not None and answer.heatmap.shape[2] == 3
    assert answer.summary.startswith(f"## {HEADLINES[answer.label]}") and answer.guidance == GUIDANCE[answer.label]
    assert not upload.exists()


def test_a_long_thin_photo_gets_the_answer_batch_scoring_gives(tmp_path, judging):
    """The page holds a photo over 4,096 px as a smaller copy; a strip 6,000 x 60 px had become 4,096 x 41 there and
    was answered "too small", where batch scoring answered it."""
    strip = np.ascontiguousarray(np.tile(spot_photo("nevus", size=60), (1, 100, 1)))
    upload = write_rgb(tmp_path / "strip.png", strip)
    expected = judging.predict_file(upload)
    answer = check_spot(judging, str(upload))
    assert "too small" not in expected.reason and answer.label == expected.label
    assert answer.probabilities == pytest.approx(expected.probabilities, abs=1e-6)


@pytest.mark.parametrize("photo, why", [
    (np.full((10, 10, 3), 150, np.uint8), "too small"),  # the photo itself is unusable
    (spot_photo("vascular", size=200), "does not look like the skin spots"),  # unlike the training photos
])
def test_a_photo_it_cannot_judge_gets_no_confidence_bars(tmp_path, uploads, predictor, photo, why):
    """"Not sure" beside "nevus 98%" would read as "98% a mole": a photo that is unusable, or unlike the photos the
    model learned from, gets the decision alone. Neither is said to be "found and framed" (a page of text, a wall)."""
    answer = check_spot(predictor, str(write_rgb(tmp_path / "photo.png", photo)))
    assert answer.label == "unsure" and why in answer.summary and answer.probabilities == {}
    assert "found and framed" not in answer.summary
    unusable = why == "too small"  # no heatmap on it; a photo unlike the training ones shows what was checked
    assert (answer.heatmap is not None) is ("tap your spot" in answer.summary) is (not unusable)
    page = PageHandlers(predictor, uploads)
    *_, unanswered, held = page.answer({"path": str(write_rgb(uploads / "photo.png", photo))}, None, LatestPhoto())
    assert not unanswered and held is not None  # an answer all the same: the photo stays
    # Its frame can be moved, unless the photo is too small, dark or blurred to look for a spot in at all: a tap
    # on a 10 px photo blown up to fill the framing view said the same again.
    assert (page.show_frame(held)[0]["visible"] is True) is (not unusable)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # NaN cast to the heatmap's colours
def test_a_model_that_rates_photos_nan_answers_unsure_without_bars(tmp_path):
    """A checkpoint whose head holds a NaN (from a run that diverged before training stopped on it): the answer had
    been "vascular" (the argmax of NaN passes every bar), with NaN bars beside it."""
    import torch
    from model.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint()
    checkpoint["model"]["head.weight"] = torch.full_like(checkpoint["model"]["head.weight"], float("nan"))
    save_checkpoint(tmp_path / "nan.pt", checkpoint)
    broken = Predictor(tmp_path / "nan.pt")
    broken.calibration = dataclasses.replace(broken.calibration, ood_distance_max=float("inf"))  # judged, as `judging`
    answer = check_frame(broken, spot_photo("vascular", size=200))
    assert answer.label == "unsure" and "could not rate this photo" in answer.summary
    assert answer.probabilities == {} and answer.guidance == GUIDANCE["unsure"]
    side = answer.heatmap.shape[0]  # the framed spot, a gap, and the same with an empty heatmap (not NaN cast to 0-255)
    square, shown = answer.heatmap[:, :side], answer.heatmap[:, -side:]
    assert np.array_equal(shown, overlay_heatmap(square, np.zeros((side, side), np.float32)))


def test_a_bad_file_gets_a_message_not_a_crash(tmp_path, predictor):
    upload = tmp_path / "upload.jpg"
    upload.write_text("definitely not a photo")
    answer = check_spot(predictor, str(upload))
    assert "cannot be used" in answer.summary and answer.probabilities == {}
    assert not upload.exists()
    # No photo: also what is left after the browser refused one over the size limit (its pop-up fades).
    assert "first" in check_spot(predictor, None).summary and "50 MB" in check_spot(predictor, None).summary
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff\xd8" + bytes(data.images.MAX_FILE_BYTES))
    too_large = check_spot(predictor, str(huge)).summary
    assert "The file is too large (just over 50 MB; the limit is 50 MB)" in too_large  # not "mb", nor "50 MB"
    assert "smaller copy" in too_large and "Please upload a photo" not in too_large  # it is one: "but I did"
    assert "Please upload a photo" in answer.summary


def test_guidance_is_complete_and_careful():
    assert set(GUIDANCE) == set(HEADLINES) == {"vascular", "nevus", "other", "unsure"}
    assert "not a diagnosis" in DISCLAIMER
    assert "blanch" in GUIDANCE["vascular"].lower() and "ABCDE" in GUIDANCE["nevus"]
    assert "does not fade" in GUIDANCE["vascular"]  # a red spot that does not blanch needs a doctor
    assert "can be wrong" in GUIDANCE["vascular"] and "is new" in DISCLAIMER  # the README's own warning, on the page
    assert "doctor" in GUIDANCE["other"] and "doctor" in GUIDANCE["unsure"]
    for text in GUIDANCE.values():
        assert text.endswith(DISCLAIMER)  # every answer carries it, over the API too
        assert "vitamin" not in text.lower() and "liver" not in text.lower()


def test_the_page_builds_with_the_disclaimer(predictor):
    app = build_app(predictor)
    config = app.get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert DISCLAIMER in texts
    assert WAITING in texts  # the answer box says what to do, not blank before the first answer
    buttons = {c["props"]["elem_id"]: c["props"].get("buttons") for c in config["components"]
               if c.get("props", {}).get("elem_id") in ("heatmap", "framing", "frame-size")}
    assert all("share" not in (b or []) for b in buttons.values())  # it posts to Hugging Face: not offline
    assert "reset" not in (buttons["frame-size"] or [])  # it went to 50%, not back to the automatic frame
    assert serve.app.MAX_UPLOAD == "50mb"  # the same limit as data.images


def two_spots() -> np.ndarray:
    """A wide photo: a small brown spot on the left, a larger red one on the right."""
    image = spot_photo("nevus", size=300, radius=12, centre=(60, 150))
    image = np.concatenate([image, spot_photo("vascular", size=300, radius=30, centre=(150, 150), seed=1)], axis=1)
    return np.ascontiguousarray(image)


def test_the_frame_can_be_moved_to_another_spot_and_resized(predictor):
    photo = two_spots()
    first = check_frame(predictor, photo)
    x0, y0, x1, y1 = first.box
    assert x0 <= 450 <= x1 and "2 spots seen" in first.summary  # the larger red spot was picked
    assert first.photo is photo

    # A click on the small spot in the framing view frames that spot, at its own size (twice its diameter).
    scale = serve.app.view_scale(photo)
    moved = moved_frame(photo, first.box, click=(60 * scale, 150 * scale))
    assert moved[0] < 48 and moved[2] > 72 and moved[1] < 138 and moved[3] > 162
    assert 40 <= moved[2] - moved[0] <= 60 < x1 - x0
    # A click on plain skin moves the frame there at the size it had.
    on_skin = moved_frame(photo, first.box, click=(250 * scale, 150 * scale))
    assert on_skin[2] - on_skin[0] == x1 - x0 and abs(on_skin[0] + on_skin[2] - 500) <= 1
    second = check_frame(predictor, photo, moved)
    assert second.box == moved and "the frame you placed" in second.summary
    assert not np.array_equal(second.heatmap, first.heatmap)

    # The slider resizes it around the same centre; the frame always stays inside the photo.
    bigger = moved_frame(photo, moved, percent=80)
    assert bigger[2] - bigger[0] == 240 and bigger[0] == 0  # moved right to fit
    assert frame_percent(photo, bigger) == 80
    assert moved_frame(photo, moved, percent=1)[2] - moved_frame(photo, moved, percent=1)[0] == 32  # smallest frame
    side = moved[2] - moved[0]
    assert moved_frame(photo, moved, click=(10_000, -50)) == (600 - side, 0, 600, side)


def test_the_move_buttons_shift_the_frame_a_quarter_of_its_side_and_keep_it_inside():
    photo = np.zeros((300, 400, 3), np.uint8)
    box = (100, 100, 180, 180)
    assert moved_frame(photo, box, shift=(1, 0)) == (120, 100, 200, 180)
    assert moved_frame(photo, box, shift=(0, -1)) == (100, 80, 180, 160)
    assert moved_frame(photo, (0, 0, 80, 80), shift=(-1, 0)) == (0, 0, 80, 80)  # at the edge it stays


def test_a_keyboard_can_move_the_frame_where_a_tap_would_and_the_controls_follow_the_held_photo(uploads, predictor):
    app = build_app(predictor)  # as the page wires them: the check button, and the move buttons in MOVES' order
    answer = next(f.fn for f in app.fns.values() if f.api_name == "check")
    assert answer.__func__ is PageHandlers.answer
    show_frame = answer.__self__.show_frame
    moves = [f.fn for f in app.fns.values() if f.name == "move_frame_by_a_quarter"]
    assert len(moves) == len(serve.app.MOVES) == 4
    upload = write_rgb(uploads / "spot.png", spot_photo("nevus", size=300, radius=20))
    held = answer({"path": str(upload)}, None, LatestPhoto())[5]
    x0, y0, x1, y1 = held.box
    assert serve.app.MOVES[1] == ("Move frame right", (1, 0))
    moved = moves[1](held, LatestPhoto())
    summary, held_after = moved[0], moved[5]
    assert held_after.box == (x0 + (x1 - x0) // 4, y0, x1 + (x1 - x0) // 4, y1) and held_after.placed
    assert any(h in summary for h in HEADLINES.values())
    assert [update["interactive"] for update in show_frame(held_after)[3:]] == [True] * 4
    assert [update["interactive"] for update in show_frame(None)[3:]] == [False] * 4
    at_right_edge = held_after
    for _ in range(20):
        at_right_edge = moves[1](at_right_edge, LatestPhoto())[5]
    assert at_right_edge.box[2] == 300  # at the photo's right edge: "right" is greyed out, the others stay usable
    assert [update["interactive"] for update in show_frame(at_right_edge)[3:]] == [True, False, True, True]
    assert show_frame(held_after)[0]["visible"] is True and show_frame(None)[0]["visible"] == "hidden"  # the panel


def test_a_click_frames_as_the_model_was_trained_to_frame():
    """A model trained with --flatten-lightness frames a tap with the shade taken out too (Predictor's setting)."""
    photo, whole = shaded_photo(), (0, 0, 400, 300)
    tap = (300 * serve.app.view_scale(photo), 150 * serve.app.view_scale(photo))
    x0, y0, x1, y1 = moved_frame(photo, whole, click=tap, flatten_lightness=True)
    assert x0 < 300 < x1 and y0 < 150 < y1 and x1 - x0 < 80
    assert moved_frame(photo, whole, click=tap)[2] - moved_frame(photo, whole, click=tap)[0] > 150  # plain: the shade


def test_the_framing_view_shows_the_frame_on_the_photo_scaled_for_the_page():
    photo = np.zeros((1500, 3000, 3), np.uint8)
    view = framing_view(photo, (1000, 500, 1600, 1100))
    assert view.shape == (256, 512, 3) and photo.max() == 0  # the held photo itself is not drawn on
    assert (view[85:100, 171:273] == 255).any() and view[120:160, 190:250].max() == 0  # an outline, not a fill

    # A small photo is enlarged as much (its spot as easy to tap), and a tap maps back to its own pixels.
    small = np.zeros((90, 120, 3), np.uint8)
    view = framing_view(small, (30, 20, 90, 80))
    assert view.shape == (384, 512, 3) and (view[80:90, 130:380] == 255).any() and small.max() == 0
    assert moved_frame(small, (30, 20, 90, 80), click=(256, 192)) == (30, 15, 90, 75)  # centred on (60, 45)


def test_a_huge_photo_is_held_downscaled_and_answered_as_batch_scoring_answers_it(tmp_path, judging, monkeypatch):
    monkeypatch.setattr(data.images, "WORKING_SIDE", 300)
    photo = spot_photo("nevus", size=600, radius=40, seed=5)
    upload = write_rgb(tmp_path / "big.png", photo)
    expected = judging.predict(photo)  # the full-size photo, as batch scoring and predict_file see it
    answer = check_spot(judging, str(upload))
    assert answer.photo.shape == (300, 300, 3) and not upload.exists()
    assert expected.judged and answer.probabilities == expected.probabilities and answer.label == expected.label
    assert tuple(2 * v for v in answer.box) == expected.framing.box  # the same frame, in each one's own pixels
    assert check_spot(judging, str(tmp_path / "gone.png")).photo is None


@pytest.mark.parametrize("shape", [(3, 5000), (5000, 3), (1, 9000)])
def test_a_photo_a_few_pixels_thin_is_answered_and_shown(tmp_path, predictor, shape):
    upload = write_rgb(tmp_path / "thin.png", np.full((*shape, 3), 200, np.uint8))
    answer = check_spot(predictor, str(upload))
    assert answer.label == "unsure" and "too small" in answer.summary
    view = framing_view(answer.photo, answer.box)
    assert min(view.shape[:2]) >= 1 and max(view.shape[:2]) == 512


@pytest.mark.parametrize("label", list(COLOURS))
def test_the_app_answers_as_batch_scoring_does(tmp_path, judging, label):
    folder = tmp_path / "photos"
    upload = write_rgb(folder / f"{label}.png", spot_photo(label, size=200))
    score_folder(judging, folder, tmp_path / "scores.csv", progress=False)
    with (tmp_path / "scores.csv").open(newline="") as f:
        (row,) = csv.DictReader(f)
    answer = check_spot(judging, str(upload))
    assert answer.label == row["label"] and " ".join(map(str, answer.box)) == row["frame"]
    assert answer.summary.split("**Why:** ")[1].startswith(row["reason"])
    assert {c: f"{p:.4f}" for c, p in answer.probabilities.items()} == {c: row[f"p_{c}"] for c in COLOURS}


def test_checking_again_uses_the_held_photo_only_for_the_same_upload(uploads, predictor):
    """The page's button: a photo answered before is held in memory; a different upload never gets its answer."""
    answer = PageHandlers(predictor, uploads).answer
    first = write_rgb(uploads / "first.png", spot_photo("vascular", size=200))
    summary, _, _, _, unanswered, held = answer({"path": str(first)}, None, LatestPhoto())
    assert not unanswered and isinstance(held, HeldPhoto) and held.upload == str(first)
    assert not first.exists()

    # Pressed again: the upload is gone, the held photo answers.
    again = answer({"path": str(first)}, held, LatestPhoto())
    assert again[0] == summary and again[5].photo is held.photo

    # Another upload that is gone: not the held photo.
    other = answer({"path": str(uploads / "other.png")}, held, LatestPhoto())
    assert "upload the photo again" in other[0] and other[5] is None


def test_held_photos_stay_within_the_memory_budget_oldest_let_go_first(uploads, predictor, monkeypatch):
    """Many photos answered within HELD_SECONDS (e.g. API calls) must not fill the memory: past HELD_BYTES the
    longest-held photos are let go, and their page asks for the photo again instead of failing."""
    photo_bytes = 200 * 200 * 3
    monkeypatch.setattr(serve.app, "HELD_BYTES", 2 * photo_bytes)
    page = PageHandlers(predictor, uploads)
    answer = page.answer
    reframe = page.reframe
    held = []
    for i in range(3):
        upload = write_rgb(uploads / f"{i}.png", spot_photo("nevus", size=200, seed=i))
        held.append(answer({"path": str(upload)}, None, LatestPhoto())[5])
    assert held[0].photo is None and held[1].photo is not None and held[2].photo is not None
    assert "upload the photo again" in reframe(held[0], LatestPhoto(), 40)[0]
    assert any(h in reframe(held[2], LatestPhoto(), 40)[0] for h in HEADLINES.values())


class LetGoAfterOneRead:
    """A held photo that another session's request lets go (HeldPhotos.hold, on another thread) right after it is
    first read."""

    def __init__(self, held: HeldPhoto):
        self.upload, self.box, self.placed, self._photo = held.upload, held.box, held.placed, held.photo
        self.own_frame_label, self.framable = held.own_frame_label, held.framable

    @property
    def photo(self):
        photo, self._photo = self._photo, None
        return photo


def test_a_photo_let_go_while_its_request_runs_is_still_answered(uploads, predictor):
    """A request that found its photo held finishes with it, not with "Something went wrong" or a bare "Error"."""
    page = PageHandlers(predictor, uploads)
    answer = page.answer
    reframe = page.reframe
    show_frame = page.show_frame
    upload = write_rgb(uploads / "spot.png", spot_photo("vascular", size=200))
    held = answer({"path": str(upload)}, None, LatestPhoto())[5]
    assert any(h in reframe(LetGoAfterOneRead(held), LatestPhoto(), 40)[0] for h in HEADLINES.values())
    assert any(h in answer({"path": str(upload)}, LetGoAfterOneRead(held), LatestPhoto())[0] for h in HEADLINES.values())
    _, picture, *_ = show_frame(LetGoAfterOneRead(held))
    assert picture is not None and Path(picture).is_file()


def test_the_page_reads_and_deletes_only_files_in_its_upload_folder(tmp_path, uploads, predictor):
    """A request naming any other file on the server (the API lets a caller send a bare path) gets no answer from
    it, and the file stays: nothing is read or deleted, and the reply does not even say whether it exists."""
    answer = PageHandlers(predictor, uploads).answer
    elsewhere = write_rgb(tmp_path / "private" / "photo.png", spot_photo("vascular", size=200))
    for path in (elsewhere, tmp_path / "private" / "missing.png", uploads / ".." / "private" / "photo.png"):
        summary, chart, heatmap, guidance, unanswered, held = answer({"path": str(path)}, None, LatestPhoto())
        assert summary == check_spot(predictor, None).summary and chart is heatmap is held is None
    assert elsewhere.is_file()


class PhotoPutInWhileChecking:
    """A predictor during whose answer the page's photo is replaced (`clear` sets the page's latest photo)."""

    def __init__(self, predictor: Predictor, latest: LatestPhoto, put_in: str | None):
        self.predictor, self.latest, self.put_in = predictor, latest, put_in

    def __getattr__(self, name: str):  # everything but `predict` as the real one has it
        return getattr(self.predictor, name)

    def predict(self, *args, **kwargs):
        self.latest.upload = self.put_in
        return self.predictor.predict(*args, **kwargs)


@pytest.mark.parametrize("before, put_in, shown", [
    ("red.png", "brown.png", False),  # another photo replaced it: its answer must not appear next to the new one
    ("red.png", None, False),  # the photo box was emptied
    ("old.png", "red.png", True),  # this photo's own `clear` arrived after the button was pressed
    (None, None, True),  # no page events at all (an API client)
])
def test_an_answer_is_dropped_when_its_photo_was_replaced_while_being_checked(uploads, predictor, before, put_in,
                                                                            shown):
    upload = write_rgb(uploads / "red.png", spot_photo("vascular", size=200))
    latest = LatestPhoto(before and str(uploads / before))
    page = PageHandlers(PhotoPutInWhileChecking(predictor, latest, put_in and str(uploads / put_in)), uploads)
    answer = page.answer
    summary, chart, heatmap, guidance, unanswered, held = answer({"path": str(upload)}, None, latest)
    if shown:
        assert any(h in summary for h in HEADLINES.values()) and isinstance(held, HeldPhoto)
    else:
        skipped = gr.skip()
        assert [summary, chart, heatmap, guidance, held] == [skipped] * 5 and unanswered is False


def test_an_answer_for_a_photo_replaced_before_its_check_began_is_dropped(uploads, predictor):
    """The button pressed for one photo and another put in before the check began (the press names the first): its
    answer, and its framing view, had been shown next to the second photo."""
    first, second = (write_rgb(uploads / name, spot_photo("vascular", size=200)) for name in ("red.png", "b.png"))
    page, latest = PageHandlers(predictor, uploads), LatestPhoto()
    page.clear({"path": str(first)}, latest)
    page.clear({"path": str(second)}, latest)
    summary, *_, unanswered, held = page.answer({"path": str(first)}, None, latest)
    assert summary == gr.skip() and held == gr.skip() and unanswered is False
    again = page.answer({"path": str(second)}, None, latest)[0]
    assert any(h in again for h in HEADLINES.values()), again


def test_what_goes_around_an_answer_is_shown_in_one_step(uploads, predictor):
    """The confidence panel, the heatmap, the note under the framing controls, the photo box and the framing
    controls, from one answer's outputs (in steps of their own they had appeared one by one)."""
    page = PageHandlers(predictor, uploads)
    summary, chart, heatmap, _, unanswered, held = page.answer(
        {"path": str(write_rgb(uploads / "spot.png", spot_photo("nevus", size=300)))}, None, LatestPhoto())
    shown_chart, shown_heatmap, note, photo, panel, framing, *_ = page.around_answer(
        summary, {"confidences": [{"label": "nevus", "confidence": 0.9}]}, {"path": heatmap}, unanswered, held)
    assert shown_chart["visible"] is True and shown_heatmap["visible"] is True and note.startswith("Answer for this")
    assert photo == gr.skip() and panel["visible"] is True and framing is not None
    # No answer (the photo let go meanwhile): the photo box is emptied and the framing controls hidden.
    gone = page.reframe(None, LatestPhoto(), 40)
    _, _, _, photo, panel, framing, *_ = page.around_answer(gone[0], None, None, gone[4], gone[5])
    assert "upload the photo again" in gone[0] and photo is None and panel["visible"] == "hidden" and framing is None
    # ... unless another photo has been put in since: that reply must not empty the new photo's box.
    latest = LatestPhoto()
    page.clear({"path": held.upload}, latest)
    page.clear({"path": str(uploads / "new.png")}, latest)
    let_go = dataclasses.replace(held, photo=None)
    assert page.reframe(let_go, latest, 40)[0] == gr.skip() and page.reframe(let_go, latest, 40)[4] is False


def test_a_size_typed_outside_the_slider_is_taken_as_its_nearest_end(uploads, predictor):
    """Gradio's own check of 150 typed into the slider's box had put "Error" over the whole answer."""
    page = PageHandlers(predictor, uploads)
    held = page.answer({"path": str(write_rgb(uploads / "spot.png", spot_photo("nevus", size=300)))}, None,
                       LatestPhoto())[5]
    summary, *_, whole = page.resize_frame(held, LatestPhoto(), 150)
    assert whole.box[2] - whole.box[0] == 300 and any(h in summary for h in HEADLINES.values())
    smallest = page.resize_frame(held, LatestPhoto(), -5)[5]
    assert smallest.box[2] - smallest.box[0] == data.framing.MIN_FRAME_SIDE
    assert page.resize_frame(held, LatestPhoto(), "")[0] == gr.skip()  # no number: nothing checked
    assert page.resize_frame(whole, LatestPhoto(), 100)[0] == gr.skip()  # its own size (a tap into the box): nor
    assert page.resize_frame(smallest, LatestPhoto(), 1)[0] == gr.skip()  # nor the same frame (the smallest there is)
    assert page.around_resized(summary, None, None, False, whole, 150)[6]["value"] == 100  # after the check, too
    assert page.around_resized(summary, None, None, False, whole, 33.4)[6] == gr.skip()  # as typed, not rounded
    assert page.redraw_frame(whole, 150)[2]["value"] == 100  # the slider shows the size checked
    assert page.redraw_frame(whole, 40)[2] == gr.skip()  # a size from 1 to 100 is left where the person put it


def test_each_answer_gets_its_own_picture_file_and_old_ones_are_swept():
    """The same picture twice (the same photo checked twice at once) must give two files: Gradio rewrites a
    shared one in place while the other answer's browser may be reading it."""
    files = OutputFiles(keep_seconds=60)
    picture = spot_photo("vascular", size=64)
    first, second = files.write_picture(picture), files.write_picture(picture)
    assert first != second
    assert np.array_equal(cv2.imread(second)[..., ::-1], picture)
    chart = files.write_label("nevus", {"vascular": 0.1, "nevus": 0.7, "other": 0.2})
    os.utime(first, (0, 0))  # long ago
    os.utime(chart, (0, 0))
    delete_older(files.folder, files.keep_seconds)  # as the page's sweeping thread does
    assert not os.path.exists(first) and not os.path.exists(chart) and os.path.exists(second)


def test_the_confidence_panel_is_headed_by_the_decision_not_the_top_group(uploads):
    """Below the vascular bar the answer is "unsure": the panel's heading (and the API's `label`) must not say
    "vascular" under a "Not sure" headline."""
    strict = Predictor(DEFAULT_CHECKPOINT)
    strict.calibration = dataclasses.replace(strict.calibration, vascular_min=0.9999, unsure_below=0.0,
                                             ood_distance_max=float("inf"))  # the synthetic photo counts as judged
    answer = PageHandlers(strict, uploads).answer
    upload = write_rgb(uploads / "red.png", spot_photo("vascular", size=200))
    summary, chart, *_ = answer({"path": str(upload)}, None, LatestPhoto())
    panel = gr.Label().postprocess(chart)
    assert HEADLINES["unsure"] in summary
    assert panel.label == "unsure" and panel.confidences[0].label == "vascular"
    shares = [c.confidence for c in panel.confidences]
    assert len(shares) == 3 and shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1)


def test_a_photo_the_browser_cannot_show_is_replaced_by_a_copy_answered_the_same(tmp_path, judging):
    """HEIC and TIFF show as a broken picture in the photo box: a PNG copy, upright, takes the upload's place (which
    is deleted) and gets the upload's answer. What the browser shows, or cannot be read, is left as it is."""
    files = OutputFiles()
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(ROTATED_HEIC)
    tiff = write_rgb(tmp_path / "spot.tif", spot_photo("nevus", size=200))
    for upload in (heic, tiff):
        expected = read_image(upload)
        copy = browser_copy(str(upload), files)
        assert copy and copy.endswith(".png") and not upload.exists()
        assert np.array_equal(read_image(copy), expected)  # upright: 48 wide, 64 high for the HEIC
        answer, original = check_spot(judging, copy), judging.predict(expected)
        assert answer.label == original.label and answer.box == original.framing.box
        assert answer.probabilities == pytest.approx(original.probabilities if original.judged else {})

    jpeg = write_rgb(tmp_path / "spot.jpg", spot_photo("vascular", size=200))
    assert browser_copy(str(jpeg), files) is None and jpeg.exists()
    assert browser_copy(str(tmp_path / "gone.heic"), files) is None and browser_copy(None, files) is None
    broken, empty = tmp_path / "broken.heic", tmp_path / "empty.jpg"
    broken.write_bytes(ROTATED_HEIC[:300])
    empty.write_bytes(b"")
    for unreadable in (broken, empty):  # no photo: said at once, by the caller (`PageHandlers.show_photo`)
        with pytest.raises(ImageError):
            browser_copy(str(unreadable), files)
        assert unreadable.exists()
    # A small JPEG whose header claims 13,300 x 13,300 pixels: refused from its header, before the check of its
    # picture data, which for such a header took half a second and 170 MB (a crafted file, sent again and again).
    whole = jpeg.read_bytes()
    frame = whole.index(b"\xff\xc0") + 5  # the baseline frame header: height, then width, 2 bytes each
    claimed = tmp_path / "claimed.jpg"
    claimed.write_bytes(whole[:frame] + (13_300).to_bytes(2, "big") * 2 + whole[frame + 4:])
    with pytest.raises(ImageTooLarge):
        browser_copy(str(claimed), files)


def test_the_button_waits_for_the_photo_box_and_a_replaced_photo_is_not_put_back(uploads, predictor):
    page = PageHandlers(predictor, uploads)
    clear, show_photo = page.clear, page.show_photo
    heic = uploads / "IMG_0001.HEIC"
    heic.parent.mkdir(parents=True)
    heic.write_bytes(ROTATED_HEIC)
    latest = LatestPhoto()
    assert clear({"path": str(heic)}, latest)[-1]["interactive"] is False  # the button, until the photo is shown
    copy, button, summary, guidance = show_photo({"path": str(heic)}, latest)
    assert copy.endswith(".png") and button["interactive"] is True and not heic.exists()
    assert summary == guidance == gr.skip()  # the answer waits for the button

    heic.write_bytes(ROTATED_HEIC)  # put in, then another photo put in before its copy was made: the box keeps that
    clear({"path": str(heic)}, latest)
    clear({"path": str(uploads / "next.jpg")}, latest)
    assert show_photo({"path": str(heic)}, latest) == (gr.skip(),) * 4


def damaged_jpeg() -> bytes:
    """A JPEG whose second half of picture data is lost (an interrupted copy): a browser shows it with a grey part."""
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8), (9, 9), 3)
    whole = cv2.imencode(".jpg", texture)[1].tobytes()
    return whole[: len(whole) // 2] + b"\xff\xd9"


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a photo", ROTATED_HEIC[:300], damaged_jpeg()],
                         ids=["empty", "text", "cut-off HEIC", "damaged JPEG"])
def test_a_file_that_is_no_photo_is_answered_as_it_is_put_in(uploads, predictor, content):
    """Not left in the photo box as a broken picture until Check is pressed: the box is emptied, the answer says
    what is wrong (as Check would), the file is deleted, and the button comes back. A JPEG whose picture data is
    damaged too: the browser shows it, with a grey or garbled part."""
    page = PageHandlers(predictor, uploads)
    uploads.mkdir(parents=True)
    fake = uploads / "holiday.jpg"
    fake.write_bytes(content)
    latest = LatestPhoto()
    page.clear({"path": str(fake)}, latest)
    box, button, summary, guidance = page.show_photo({"path": str(fake)}, latest)
    assert box is None and button["interactive"] is True and guidance == DISCLAIMER
    assert summary.startswith("## This file cannot be used") and "Please upload a photo" in summary
    assert not fake.exists()
    fake.write_bytes(content)
    assert summary == check_spot(predictor, str(fake)).summary  # the words Check gives


def test_a_tiff_of_measurements_is_answered_with_what_to_export_not_with_a_list_naming_tiff(uploads, predictor):
    """A floating-point TIFF had been answered "... not a readable image (corrupt, truncated or unsupported format).
    Please upload a photo (JPEG, PNG, HEIC, WebP, AVIF, BMP, TIFF or GIF).": a TIFF, refused with advice to send one."""
    page = PageHandlers(predictor, uploads)
    uploads.mkdir(parents=True)
    scan = uploads / "scan.tif"
    cv2.imwrite(str(scan), np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64))
    latest = LatestPhoto()
    page.clear({"path": str(scan)}, latest)
    box, button, summary, guidance = page.show_photo({"path": str(scan)}, latest)
    assert summary == ("## This file cannot be used\n\nThe file is a floating-point TIFF (scientific image data), not "
                       "a photo: export it as an 8-bit JPEG or PNG.")
    assert box is None and button["interactive"] is True and not scan.exists()


class Answering:
    """The shipped predictor, with the label (and the confidence) of its answers replaced (what the page says for
    each)."""

    def __init__(self, predictor: Predictor, label: str, confidence: float = 0.95):
        self.predictor, self.label, self.confidence = predictor, label, confidence
        self.checkpoint_sha256 = predictor.checkpoint_sha256

    def predict(self, *args, **kwargs):
        return dataclasses.replace(self.predictor.predict(*args, **kwargs), label=self.label, confidence=self.confidence)


@pytest.mark.parametrize("label", ["vascular", "nevus", "other", "unsure"])
def test_a_reassuring_answer_warns_in_the_answer_itself(tmp_path, predictor, label):
    """A `vascular` answer (what a red melanoma can hide behind) and a `nevus` answer (an early melanoma) say when
    to see a doctor right under the reason, where a phone shows it, not only in the guidance further down the page;
    the other answers already say to have the spot checked."""
    photo = write_rgb(tmp_path / "spot.png", spot_photo("vascular", size=200))
    summary = check_spot(Answering(predictor, label), str(photo)).summary
    assert summary.startswith(f"## {HEADLINES[label]}")
    assert [kind for kind, caution in CAUTION.items() if caution in summary] == ([label] if label in CAUTION else [])
    if label in CAUTION:
        assert summary.index("Why:") < summary.index(CAUTION[label])
        if label == "vascular":  # the shipped model's own figure
            assert "of 9 everyday photos that it called a cherry angioma at over 90%, 3 were" in summary


def test_only_the_shipped_model_at_90_percent_quotes_the_figures_measured_on_it(tmp_path, predictor):
    """A model of one's own (`--checkpoint`) was not measured on everyday photos, and the figure is of answers at 90%
    or more (a 66% mole had been told "of 39 ... at over 90%, 2 were something else", read as reassurance): both get
    the plain warning."""
    photo = read_image(write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=200)))
    shipped = check_frame(Answering(predictor, "nevus", 0.9), photo).summary
    assert "of 39 everyday photos that it called a mole at over 90%, 2 were" in shipped
    another_model = Answering(predictor, "nevus", 0.95)
    another_model.checkpoint_sha256 = "0" * 64
    for answering in (Answering(predictor, "nevus", 0.89), another_model):
        summary = check_frame(answering, photo).summary
        assert CAUTION["nevus"] in summary and "Its percentage is not the chance that it is right." in summary
        assert "everyday photos" not in summary


def test_a_photo_replaced_before_it_was_checked_is_not_kept(uploads, predictor, tmp_path):
    page = PageHandlers(predictor, uploads)
    clear = page.clear
    first, second = (write_rgb(uploads / name, spot_photo("nevus", size=64)) for name in ("a.png", "b.png"))
    elsewhere = write_rgb(tmp_path / "not_an_upload.png", spot_photo("nevus", size=64))
    latest = LatestPhoto()
    assert clear({"path": str(first)}, latest)[0] == WAITING  # the previous answer goes; the box says what to do
    clear({"path": str(first)}, latest)  # the same file again (uploads are stored by content): kept
    assert first.exists()
    clear({"path": str(second)}, latest)
    assert not first.exists() and second.exists()
    latest.upload = str(elsewhere)  # only Gradio's own uploads are ever deleted
    clear(None, latest)
    assert elsewhere.exists()


@pytest.fixture
def main_in_process(monkeypatch, predictor) -> list[str]:
    """`serve.app.main` run in the test's own process, on the session's predictor, without the steps that change the
    whole process (an upload folder in GRADIO_TEMP_DIR, a sweeping thread, serving until a signal): the names of
    those steps as main took them."""
    steps = []
    monkeypatch.setattr(serve.app, "Predictor", lambda *args, **kwargs: predictor)
    monkeypatch.setattr(serve.app, "private_upload_folder", lambda: steps.append("upload folder") or Path("/u"))
    monkeypatch.setattr(serve.app, "sweep_every", lambda folder, seconds: steps.append(f"sweep {folder} {seconds}"))
    monkeypatch.setattr(serve.app, "serve_until_stopped", lambda app: steps.append("served"))
    return steps


def test_the_app_serves_this_machine_only_offline_and_queues_as_the_readme_says(monkeypatch, main_in_process):
    """What `python -m serve.app` starts with no flags: this machine only, no share link, two answers at a time and
    64 waiting (the README's promises), so a changed default cannot pass unnoticed."""
    started = {}

    def launch(self, **kwargs):
        started.update(kwargs, queue=(self._queue.default_concurrency_limit, self._queue.max_size))
        return self

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.setattr(gr.Blocks, "local_url", "http://127.0.0.1:7860/", raising=False)
    serve.app.main([])
    assert started["server_name"] == "127.0.0.1" and started["server_port"] == 7860
    assert started["share"] is False and started["queue"] == (2, 64)
    assert started["max_file_size"] == serve.app.MAX_UPLOAD
    assert started["run_history"] is False and started["enable_monitoring"] is False
    assert [m.cls for m in started["app_kwargs"]["middleware"]] == [RequestGuard]
    assert main_in_process == ["upload folder", f"sweep /u {serve.app.CACHE_SECONDS}", "served"]


STOPPED_WHILE_LOADING = """
import atexit, os, runpy, signal, sys, time
import model.predictor

def loading(*args, **kwargs):
    raise KeyboardInterrupt  # Ctrl+C while the model loads

def clean_up():  # as the uploads folder is deleted on the way out; an impatient second Ctrl+C meanwhile
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)
    print("cleaned up", file=sys.stderr)

atexit.register(clean_up)
model.predictor.Predictor = loading
sys.argv = ["serve.app"]
runpy.run_module("serve.app", run_name="__main__")
"""


def test_ctrl_c_while_the_model_loads_says_interrupted_and_a_second_one_does_not_cut_the_clean_up_short():
    """The first had printed a KeyboardInterrupt traceback; a second, during the clean-up, had stopped it midway."""
    run = subprocess.run([sys.executable, "-c", STOPPED_WHILE_LOADING], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (run.returncode, run.stderr.strip()) == (130, "interrupted\ncleaned up")


STOPPED_BY_A_CLOSED_TERMINAL = """
import os, signal, sys
import serve.app
from data.flags import run_command

class App:  # serving until its terminal is closed
    @property
    def is_running(self):
        os.kill(os.getpid(), signal.SIGHUP)
        return True

    def close(self, verbose):
        print("closed", file=sys.stderr)

run_command(lambda: serve.app.serve_until_stopped(App()))
"""


def test_a_closed_terminal_closes_the_server_without_a_traceback():
    """Its "stopping" line cannot be written to a terminal that is gone (EIO): it had ended the server with a
    traceback, status 1, before closing it."""
    pty = pytest.importorskip("pty")
    terminal, its_output = pty.openpty()
    os.close(terminal)  # closed
    try:
        run = subprocess.run([sys.executable, "-c", STOPPED_BY_A_CLOSED_TERMINAL], cwd=ROOT, stdout=its_output,
                             stderr=subprocess.PIPE, text=True, timeout=120,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    finally:
        os.close(its_output)
    assert (run.returncode, run.stderr) == (0, "closed\n")


def test_a_busy_port_or_missing_certificate_is_a_message_a_user_can_act_on(main_in_process, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit, match=f"cannot serve at 127.0.0.1:{port}.*--port N$"):  # no Gradio advice
            serve.app.main(["--port", str(port)])
    with pytest.raises(SystemExit) as stop:  # argparse's usage error, exit status 2
        serve.app.main(["--ssl-certfile", str(tmp_path / "missing.pem"), "--ssl-keyfile", str(tmp_path / "k.pem")])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        serve.app.main(["--ssl-certfile", str(tmp_path / "missing.pem")])
    assert stop.value.code == 2


@pytest.mark.parametrize(("flags", "said"), [
    (["--port", "70000"], "--port: must be from 1 to 65535, not 70000"),  # had been Gradio's OverflowError
    (["--port", "0"], "--port: must be from 1 to 65535, not 0"),  # had been an httpx traceback
    (["--host", "nosuch.invalid"], "--host nosuch.invalid: cannot serve at this address ("),  # had been "port in use"
    (["--host", "192.0.2.1"], "--host 192.0.2.1: cannot serve at this address ("),  # not this machine's address
    (["--host", "::1"], "not an IPv6 one"),  # had been an httpx traceback
])
def test_an_address_the_app_cannot_serve_at_is_a_usage_error_naming_it(main_in_process, capsys, flags, said):
    with pytest.raises(SystemExit) as stop:
        serve.app.main(flags)
    assert stop.value.code == 2 and said in capsys.readouterr().err
    assert main_in_process == []  # refused before any start-up work


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make test certificates")
def test_a_certificate_and_key_that_cannot_serve_https_are_a_usage_error_naming_them(main_in_process, tmp_path,
                                                                                      capsys):
    """They had failed only once the server started, as "the port is in use, or the certificate and key do not
    match"; a key with a passphrase had been asked for at the terminal."""
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", str(tmp_path / f"{name}.key"), "-out", str(tmp_path / f"{name}.pem")],
                       check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(tmp_path / "a.key"), "-aes256", "-passout", "pass:secret", "-out",
                    str(tmp_path / "locked.key")], check=True, capture_output=True)
    for key, said in (("b.key", "the key is not this certificate's"),
                      ("locked.key", "they must be a PEM certificate and its PEM private key, without a passphrase"),
                      ("a.pem", "they must be a PEM certificate")):  # the certificate given twice
        with pytest.raises(SystemExit) as stop:
            serve.app.main(["--ssl-certfile", str(tmp_path / "a.pem"), "--ssl-keyfile", str(tmp_path / key)])
        err = capsys.readouterr().err
        assert stop.value.code == 2
        assert f"--ssl-certfile {tmp_path / 'a.pem'} and --ssl-keyfile {tmp_path / key}: {said}" in err
    assert serve.app.certificate_problem(str(tmp_path / "a.pem"), str(tmp_path / "a.key")) is None
    # One it cannot read (had been a traceback; as root, a folder stands in for a key this user may not read).
    assert serve.app.certificate_problem(str(tmp_path / "a.pem"), str(tmp_path)) == "cannot read them (Is a directory)"
    assert main_in_process == []  # refused before any start-up work


def test_a_missing_checkpoint_is_a_usage_error_as_in_batch_scoring(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        serve.app.main(["--checkpoint", str(tmp_path / "none.pt")])
    assert stop.value.code == 2 and "error: no checkpoint file at" in capsys.readouterr().err


class FramedAnswers:
    """A predictor that answers `own` for the frame SpotCheck places and `placed` for a frame the person places."""

    settings = EvalSettings()
    checkpoint_sha256 = "0" * 64  # not the shipped model

    def __init__(self, own: str, placed: str):
        self.own, self.placed = own, placed

    def predict(self, photo: np.ndarray, box=None) -> Prediction:
        framing = Framing(box or (0, 0, 100, 100), 1, True, by_user=box is not None)
        label = self.own if box is None else self.placed
        probabilities = {c: 0.9 if c == label else 0.05 for c in ("vascular", "nevus", "other")}
        return Prediction(label, "the model rates it 90%", probabilities, 0.9, np.zeros((8, 8), np.float32),
                          np.ascontiguousarray(photo[:8, :8]), framing, None, False)


@pytest.mark.parametrize("own, placed, said", [("other", "nevus", True), ("nevus", "vascular", True),
                                               ("unsure", "vascular", True), ("nevus", "other", False),
                                               ("other", "unsure", False), ("unsure", "other", False)])
def test_a_frame_moved_until_the_answer_reassures_says_what_spotchecks_own_frame_answered(uploads, own, placed,
                                                                                          said):
    """On a melanoma photo, moving the frame turned "see a doctor" into "looks like a cherry angioma" (a user audit:
    20 of 51 melanoma photos could be reframed into a reassuring answer). A more reassuring answer for the person's
    frame than for SpotCheck's own says so (also after pressing the button again); a more cautious one does not."""
    page = PageHandlers(FramedAnswers(own, placed), uploads)
    answer = page.answer
    reframe = page.reframe
    upload = write_rgb(uploads / "spot.png", spot_photo("nevus", size=200))
    summary, *_, held = answer({"path": str(upload)}, None, LatestPhoto())
    assert summary.startswith(f"## {HEADLINES[own]}") and "placed itself" not in summary
    moved, *_, held = reframe(held, LatestPhoto(), 40)
    again, *_, held = reframe(held, LatestPhoto(), 60)  # and after another move, still against SpotCheck's own frame
    pressed, *_ = answer({"path": str(upload)}, held, LatestPhoto())  # the button again: the placed frame, checked
    for summary in (moved, again, pressed):
        assert summary.startswith(f"## {HEADLINES[placed]}")
        assert (f'placed itself, the answer was "{HEADLINES[own]}"' in summary) is said
        assert ("more cautious answer: read both above" in frame_note(summary)) is said  # in sight by the buttons


def test_a_moved_frame_is_not_compared_with_an_answer_for_a_photo_spotcheck_could_not_judge(uploads):
    """SpotCheck's own frame on a ruler or a page of text (unlike the training photos) gave no answer to go by."""
    unjudged = FramedAnswers("unsure", "vascular")
    real_predict = unjudged.predict
    unjudged.predict = lambda photo, box=None: dataclasses.replace(real_predict(photo, box), unlike_training=box is None)
    page = PageHandlers(unjudged, uploads)
    answer = page.answer
    reframe = page.reframe
    held = answer({"path": str(write_rgb(uploads / "spot.png", spot_photo("nevus", size=200)))}, None, LatestPhoto())[5]
    moved = reframe(held, LatestPhoto(), 40)[0]
    assert moved.startswith(f"## {HEADLINES['vascular']}") and "placed itself" not in moved


def test_the_note_under_the_framing_controls_repeats_the_headline_only():
    assert frame_note(f"## {HEADLINES['nevus']}\n\n**Why:** ...") == (
        f"Answer for this frame: **{HEADLINES['nevus']}** (the whole answer is above).")
    assert frame_note(WAITING) == frame_note("## Please upload the photo again\n\n...") == frame_note("") == ""
    said = f"## {HEADLINES['vascular']}\n\n**Why:** ...\n\n**{serve.app.OWN_FRAME_SAID} \"{HEADLINES['other']}\".**"
    assert frame_note(said) == (f"Answer for this frame: **{HEADLINES['vascular']}**, but SpotCheck's own frame gave a "
                                "more cautious answer: read both above.")


def test_each_answer_has_its_own_headline_and_the_reassuring_ones_their_own_caution():
    assert "cherry angioma" in HEADLINES["vascular"] and "mole" in HEADLINES["nevus"]
    assert "doctor" in HEADLINES["other"] and HEADLINES["unsure"].startswith("Not sure")
    assert len(set(HEADLINES.values())) == len(HEADLINES)
    assert set(CAUTION) == {"vascular", "nevus"}  # the two answers that reassure
    assert "red melanoma" in CAUTION["vascular"] and "early melanoma" in CAUTION["nevus"]
    assert "Have it checked by a doctor or dermatologist" in GUIDANCE["other"]  # what may be a skin cancer

