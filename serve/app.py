"""The SpotCheck web page: `python -m serve.app [--port N] [--checkpoint PATH] [--backend auto|torch|onnx]`.

Plain functions answer a photo (`check_spot`, `check_frame`) and `PageHandlers`
holds what each button does, all called directly by the tests; `build_app` lays
out the page and wires its events to them. Runs fully offline: analytics off,
system fonts only, no share link; uploads are deleted once answered.

Exit status 2 for a bad command line (a port, host, certificate or checkpoint
that cannot be used), 1 when it cannot serve at the port; stopped with Ctrl+C
or a `kill`, it deletes the uploads and exits 0 (130 if stopped before it serves).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import argparse  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402
from gradio_client.utils import is_http_url_like  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from data.flags import STOP_SIGNALS, ignore_stop_signals, int_from, named_path, run_command  # noqa: E402
from data.framing import box_around, spot_at  # noqa: E402
from data.images import (JPEG_FORMATS, MAX_FILE_BYTES, ImageError, ImageTooLarge, NotAPhoto,  # noqa: E402
                         check_jpeg, decode_image, image_format, read_image, working_copy)
from model.checkpoint import CheckpointError  # noqa: E402
from model.predictor import BACKENDS, Predictor, heatmap_beside  # noqa: E402
from serve.guidance import DISCLAIMER, GUIDANCE, HEADLINES, PHOTO_TIPS, WAITING, caution  # noqa: E402
from serve.memory import HeldPhoto, HeldPhotos, LatestPhoto, held_pixels  # noqa: E402
from serve.guard import RequestGuard  # noqa: E402
from serve.outputs import OutputFiles  # noqa: E402
from serve.uploads import private_upload_folder, sweep_every  # noqa: E402
from serve.scripts import PAGE_SCRIPT, PAGE_STYLE, SHOW_ANSWER  # noqa: E402

MAX_UPLOAD = f"{MAX_FILE_BYTES // 2**20}mb"  # the same limit as every other way in (data.images)
CACHE_SECONDS = 900  # Gradio's own copies (the heatmaps, which show the framed spot) are deleted after this
HELD_SECONDS = 900  # a photo is held in memory this long after its last answer, so its frame can be moved
HELD_BYTES = 2**30  # all held photos together (about 28 twelve-megapixel photos); beyond it the oldest are let go
HEATMAP_DISPLAY = 256  # the heatmap's height on the page, enlarged from the model's input size (112 px)
VIEW_SIDE = 512  # the framing view's longer side
PHOTO_HEIGHT = 400  # the photo box's, in CSS pixels, whatever the photo's shape
FRAME_DEFAULT = 50  # the frame-size slider before any answer
# The buttons that move the frame a quarter of its side, for a keyboard (a tap needs a pointer) and a finger that
# misses: (label, direction in x and y).
MOVES = (("Move frame left", (-1, 0)), ("Move frame right", (1, 0)), ("Move frame up", (0, -1)),
         ("Move frame down", (0, 1)))
# What browsers show in a page (Pillow's names; MPO is a camera JPEG). Other photos (HEIC, TIFF) are shown as a copy.
BROWSER_FORMATS = {*JPEG_FORMATS, "PNG", "GIF", "WEBP", "BMP", "AVIF"}
SHOWN_AS_THEY_ARE = BROWSER_FORMATS - set(JPEG_FORMATS)  # a JPEG is checked first: its picture data may be damaged
HEADER_BYTES = 64 * 1024  # what `browser_copy` reads to tell those from the others
CONFIDENCE_LABEL = "Confidence (vascular: cherry angioma; nevus: mole; other: another kind of spot)"
# A photo over the size limits is a photo: "please upload a photo" was no help ("but I did").
TOO_LARGE_ADVICE = ("Please send a smaller copy of the photo: a phone's ordinary photo (about 12 megapixels) is "
                    "enough, e.g. exported or shared at a lower resolution.")
log = logging.getLogger("spotcheck")


@dataclass
class Answer:
    summary: str  # Markdown: the headline and why
    probabilities: dict[str, float]  # the chart's bars; none with no answer, or for a photo it cannot judge
    heatmap: np.ndarray | None  # the framed spot, and beside it the heatmap over it (none for an unusable photo)
    guidance: str  # Markdown: what this means and what to do
    photo: np.ndarray | None = None  # the decoded photo, held in memory (never on disk) so the frame can be moved
    box: tuple[int, int, int, int] | None = None  # the frame that was checked, in `photo` pixels
    placed: bool = False  # the person placed the frame (else SpotCheck framed the spot itself)
    label: str | None = None  # the decision: vascular | nevus | other | unsure (None: no answer)
    own_frame_label: str | None = None  # the decision for the frame SpotCheck placed itself on this photo
    framable: bool = True  # a spot can be looked for in the photo (it is usable: not too small, dark, blurred...)


def check_spot(predictor: Predictor, path: str | None) -> Answer:
    """Answer one uploaded photo and delete the file; never raises for a bad file."""
    if not path:
        return Answer(f"## Add a photo first\n\nUpload or take a photo of the spot first (up to "
                      f"{MAX_FILE_BYTES // 2**20} MB: a larger file is refused as it is put in; send a smaller copy).",
                      {}, None, DISCLAIMER)
    if not Path(path).exists():  # answered before: uploads are deleted once answered
        return Answer("## Please upload the photo again\n\nThis photo is no longer on the server: each photo "
                      "is deleted as soon as it has been answered.", {}, None, DISCLAIMER)
    try:
        image = read_image(path)
    except ImageError as err:
        return unusable_file(err)
    finally:
        Path(path).unlink(missing_ok=True)  # uploads are not kept
    return check_frame(predictor, working_copy(image))  # held downscaled, answered as batch scoring answers it


def unusable_file(err: ImageError) -> Answer:
    """The answer for a file that cannot be read as a photo: what is wrong with it, and what to send instead. A
    NotAPhoto's reason says that itself: after "a floating-point TIFF ..., not a photo", the list of photo formats,
    TIFF among them, confused."""
    advice = ("" if isinstance(err, NotAPhoto) else
              f" {TOO_LARGE_ADVICE}" if isinstance(err, ImageTooLarge) else
              " Please upload a photo (JPEG, PNG, HEIC, WebP, AVIF, BMP, TIFF or GIF).")
    return Answer(f"## This file cannot be used\n\n{sentence(str(err))}.{advice}", {}, None, DISCLAIMER)


def sentence(reason: str) -> str:
    """A reason as the start of a sentence: the first letter upper case, the rest as it is ("MB", "HEIC")."""
    return reason[:1].upper() + reason[1:]


# How much an answer asks of the person, more the higher: a frame moved until the answer reassures more than
# SpotCheck's own frame did must say so (OWN_FRAME_SAID). "unsure" (judged: the photo usable and like the training
# photos) reassures no more than "other": both leave the spot to a doctor.
CONCERN = {"vascular": 0, "nevus": 1, "other": 2, "unsure": 2}
OWN_FRAME_SAID = "With the frame SpotCheck placed itself, the answer was"


def check_frame(predictor: Predictor, photo: np.ndarray, box: tuple[int, int, int, int] | None = None, *,
                own_frame_label: str | None = None) -> Answer:
    """Answer a decoded photo, framed automatically or by the person (`box`; `own_frame_label`: the answer for the
    frame SpotCheck placed itself)."""
    prediction = predictor.predict(photo, box)
    label = prediction.label
    if box is None:  # SpotCheck's own frame: its answer, if the photo could be judged
        own_frame_label = label if prediction.judged else None
    warning = f"\n\n{said}" if (said := caution(label, predictor.checkpoint_sha256, prediction.confidence)) else ""
    if own_frame_label and CONCERN[label] < CONCERN[own_frame_label]:
        warning += (f"\n\n**{OWN_FRAME_SAID} \"{HEADLINES[own_frame_label]}\".** "
                    "If both frames show the same spot, go by the more cautious answer.")
    # A photo too small, dark or blurred to look for a spot in: nothing about the frame.
    where = "" if prediction.problem else f"\n\n{prediction.framing.note(unlike_training=prediction.unlike_training)}"
    summary = f"## {HEADLINES[label]}\n\n**Why:** {prediction.reason}.{warning}{where}"
    # No bars for a photo SpotCheck cannot judge: "unsure" beside "nevus 98%" would read as "98% a mole"; and no
    # heatmap on a photo too small, dark or blurred to look at (one unlike the training photos keeps it: it shows
    # what was checked, which a tap on the spot can change).
    chart = prediction.probabilities if prediction.judged else {}
    heatmap = None if prediction.problem else heatmap_beside(prediction.square, prediction.heatmap)
    return Answer(summary, chart, heatmap, GUIDANCE[label], photo, prediction.framing.box, prediction.framing.by_user,
                  label, own_frame_label, framable=not prediction.problem)


def frame_note(summary: str) -> str:
    """The answer's headline again, under the framing controls, where a moved frame's new answer is in sight (the
    answer itself is far above them, on a phone a screen or two), and whether SpotCheck's own frame said something
    more cautious ("" for no answer). Read from the answer's text, which a follow-up step gets back from the page:
    the checking event's outputs are the API's four."""
    headline = next((h for h in HEADLINES.values() if summary.startswith(f"## {h}")), None)
    if headline is None:
        return ""
    if OWN_FRAME_SAID in summary:
        return (f"Answer for this frame: **{headline}**, but SpotCheck's own frame gave a more cautious answer: read "
                "both above.")
    return f"Answer for this frame: **{headline}** (the whole answer is above)."


def view_scale(photo: np.ndarray) -> float:
    """How much the framing view scales the photo: to VIEW_SIDE on its longer side, a small photo enlarged too, so
    that its spot is as easy to tap as a large photo's."""
    return VIEW_SIDE / max(photo.shape[:2])


def framing_view(photo: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The photo, scaled for the page, with the checked frame drawn on it (on a copy: the held photo is not drawn on)."""
    scale = view_scale(photo)
    h, w = photo.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # a photo 5,000 x 3 px keeps a side of 1 px
    view = cv2.resize(photo, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    thickness = max(2, round(max(view.shape[:2]) / 200))
    cv2.rectangle(view, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 0), thickness + 2)  # dark edge: visible on pale skin
    cv2.rectangle(view, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), thickness)
    return view


def frame_percent(photo: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """The frame's side as a percentage of the photo's shorter side (the page's slider)."""
    return max(1, min(100, round(100 * (box[2] - box[0]) / min(photo.shape[:2]))))


def slider_percent(value: object) -> float | None:
    """The frame-size slider's value as a size from 1 to 100 (% of the photo's shorter side), or None for no number."""
    try:
        percent = float(value)
    except (TypeError, ValueError):
        return None
    return min(100.0, max(1.0, percent)) if math.isfinite(percent) else None


def moved_frame(photo: np.ndarray, box: tuple[int, int, int, int], *, click: tuple[float, float] | None = None,
                percent: float | None = None, shift: tuple[int, int] | None = None,
                flatten_lightness: bool = False) -> tuple[int, int, int, int]:
    """The frame after a click in the framing view (framed around the spot clicked, or, on plain skin, moved there
    at its size), resized to `percent` of the shorter side around its centre, or moved a quarter of its side in the
    direction `shift` ((-1, 0): left; the page's move buttons). `flatten_lightness`: the model's framing setting
    (`Predictor.settings.flatten_lightness`)."""
    x0, y0, x1, y1 = box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    if shift is not None:
        step = max(1.0, (x1 - x0) / 4)
        centre = (centre[0] + shift[0] * step, centre[1] + shift[1] * step)
    if click is not None:
        centre = (click[0] / view_scale(photo), click[1] / view_scale(photo))
        if percent is None and (spot := spot_at(photo, centre, flatten_lightness=flatten_lightness)) is not None:
            return spot
    side = x1 - x0 if percent is None else percent / 100 * min(photo.shape[:2])
    return box_around(centre, side, photo.shape)


def browser_copy(path: str | None, files: OutputFiles) -> str | None:
    """For an upload the browser cannot show (a HEIC or TIFF photo shows as a broken picture), a PNG copy of the
    photo, upright and as it is held (`check_spot` answers the copy as it would the upload), to put in its place; the
    upload is deleted. None, and the upload left for `check_spot`, when the browser shows it or it is gone (checked
    already). Raises ImageError for a file that is no photo SpotCheck can read (it too would show as a broken
    picture), and for a JPEG whose picture data is damaged (shown with a grey or garbled part), and leaves it."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_BYTES)  # enough to name nearly every format
            if data and image_format(data) in SHOWN_AS_THEY_ARE:
                return None
            data += f.read()
    except OSError:
        return None
    check_jpeg(data)  # the browser would show a JPEG with damaged picture data, a part of it grey or garbled
    if image_format(data) in BROWSER_FORMATS:  # a JPEG, or e.g. a PNG whose metadata pushed its header further in
        return None
    copy = files.write_picture(working_copy(decode_image(data)))
    Path(path).unlink(missing_ok=True)
    return copy


def never_downloading(image: gr.Image) -> gr.Image:
    """`image`, made to refuse a web address. Gradio downloads one that an API client puts in a file payload, before
    any handler runs; SpotCheck's server makes no connection to the internet. (A subclass of gr.Image would do the
    same, but Gradio writes a type-stub file beside the module of every component class.)"""
    move = image.async_move_resource_to_block_cache

    async def local_files_only(url_or_file_path: str | Path | None) -> str | None:
        if url_or_file_path is not None and is_http_url_like(str(url_or_file_path)):
            raise gr.Error("SpotCheck does not download photos: send the file itself.")
        return await move(url_or_file_path)

    image.async_move_resource_to_block_cache = local_files_only
    return image


def uploaded_path(upload_folder: str | os.PathLike, payload: dict | None) -> str | None:
    """The uploaded file itself, for `check_spot` to read (the click runs with preprocess=False); None for a path
    outside `upload_folder`, Gradio's.

    gr.Image's own preprocessing opens every upload with PIL before the handler
    runs: a file that is not an image then fails inside Gradio (the page shows
    only "Error" next to the previous answer), and uploads it converts (RGBA,
    grayscale, rotated) are re-saved as copies, so deleting the handler's file
    would leave the original behind. Gradio checks that a path is one of its
    uploads only when the payload carries its file metadata, so the path is
    checked here: `check_spot` reads the file it is given, and deletes it.
    """
    if not payload:
        return None
    if payload.get("path"):
        path = str(payload["path"])
        return path if Path(path).resolve().is_relative_to(Path(upload_folder).resolve()) else None
    url = str(payload.get("url") or "")
    return saved_data_url(url, upload_folder) if url.startswith("data:") else None


def saved_data_url(url: str, folder: str | os.PathLike) -> str:
    """A photo sent inline through the API (a `data:` URL), saved as an upload in `folder` for `check_spot` to
    read, check and delete as it does every upload. Gradio's own preprocessing would decode it first, outside
    SpotCheck's checks: a 13,000 x 13,000 px PNG of 164 KB took 2 GB of memory before it was refused, and bytes
    that are no image got "something went wrong"."""
    header, _, body = url.partition(",")
    try:
        data = base64.b64decode(body) if header.lower().endswith(";base64") else urllib.parse.unquote_to_bytes(body)
    except ValueError:  # not base64: the text as sent, which reading then names as no image
        data = body.encode(errors="surrogateescape")
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix="inline-", delete=False) as f:
        f.write(data)
    return f.name


def failed(what: str) -> tuple:
    """The page's outputs when checking raised: never a bare "Error" on the page; the log has the details."""
    log.exception("checking %s failed", what)  # not the payload: a photo's name or its pixels, inline
    return ("## Something went wrong\n\nSpotCheck could not check this photo. Please try again, "
            "or try another photo.", None, None, DISCLAIMER, True, None)


def unless_replaced(outputs: tuple, latest: LatestPhoto, before: str | None, checked: str | None) -> tuple:
    """`outputs` for the photo `checked` (`before`: the page's latest photo when the check began), or nothing new on
    the page if another photo has been put in since (`clear` has already emptied the answer for it).

    Shown: `checked` is the latest photo; or nothing new came in and `checked` was never replaced (its own `clear`
    may arrive after the button press). Dropped: any other photo is the latest, or `checked` was replaced before its
    check began (its answer had been shown next to the new photo)."""
    if latest.upload == checked or (latest.upload == before and checked not in latest.replaced):
        return outputs
    return nothing_new()


def nothing_new() -> tuple:
    """The page's outputs of a check that changes nothing on it: the answer left as it is, the photo kept."""
    return (*[gr.skip()] * 4, False, gr.skip())


def show_parts(summary: str | None, chart_payload: dict | None, heatmap_payload: dict | None) -> tuple:
    """The confidence panel and the heatmap, each hidden while it is empty (no answer, or no bars and no heatmap
    for a photo that cannot be judged: an empty box looked like something had failed to load); and the answer's
    headline under the framing controls (`frame_note`)."""
    return (*[gr.update(visible=True if filled else "hidden")
              for filled in (bool((chart_payload or {}).get("confidences")), heatmap_payload is not None)],
            frame_note(summary or ""))


def empty_photo_if(unanswered: bool):
    """Empty the photo box when there was no answer (e.g. a damaged JPEG shows as a broken picture)."""
    return None if unanswered else gr.skip()


class PageHandlers:
    """What the page's buttons and events do, for one server: check a photo, move or resize its frame, take a new
    photo in. Each method returns the page's new values, in the order `build_app` wires them; the tests call them
    directly."""

    def __init__(self, predictor: Predictor, upload_folder: str | os.PathLike):
        self.predictor = predictor
        self.upload_folder = upload_folder  # Gradio's, where every upload lands
        self.files = OutputFiles()
        self.memory = HeldPhotos(HELD_BYTES)

    def shown(self, a: Answer, upload: str | None) -> tuple:
        """An Answer as the page's outputs: the four API outputs, then whether the photo box should be
        emptied (no answer: upload another) and the photo held for moving the frame."""
        heatmap = a.heatmap
        if heatmap is not None and heatmap.shape[0] < HEATMAP_DISPLAY:
            width = round(heatmap.shape[1] * HEATMAP_DISPLAY / heatmap.shape[0])
            heatmap = cv2.resize(heatmap, (width, HEATMAP_DISPLAY), interpolation=cv2.INTER_CUBIC)
        held_photo = None
        if a.photo is not None and upload:
            held_photo = self.memory.hold(HeldPhoto(upload, a.photo, a.box, a.placed, a.own_frame_label, a.framable))
        chart = self.files.write_label(a.label, a.probabilities) if a.label else None  # no bars: the decision alone
        return (a.summary, chart, None if heatmap is None else self.files.write_picture(heatmap), a.guidance,
                a.label is None, held_photo)

    def answer(self, payload: dict | None, held_photo: HeldPhoto | None, latest: LatestPhoto) -> tuple:
        """The check button: answer the photo in the box (the held photo again, with its frame, if it was
        answered before)."""
        before, path, pixels = latest.upload, None, held_pixels(held_photo)
        try:
            path = uploaded_path(self.upload_folder, payload)
            if pixels is not None and held_photo.upload == path and not Path(path).exists():  # checked again
                h = held_photo
                outputs = self.shown(check_frame(self.predictor, pixels, h.box if h.placed else None,
                                                 own_frame_label=h.own_frame_label), path)
            else:
                outputs = self.shown(check_spot(self.predictor, path), path)
        except Exception:
            outputs = failed("a photo")
        return unless_replaced(outputs, latest, before, path)

    def reframe(self, held_photo: HeldPhoto | None, latest: LatestPhoto, percent: float | None,
                click: tuple[float, float] | None = None, shift: tuple[int, int] | None = None) -> tuple:
        """Check the held photo again with the frame moved (a click on the framing view, a move button) or resized
        (the slider)."""
        pixels, before = held_pixels(held_photo), latest.upload
        if pixels is None:
            let_go = self.shown(Answer("## Please upload the photo again\n\nThe photo is no longer held: photos are "
                                       f"kept in memory for up to {HELD_SECONDS // 60} minutes after the last answer "
                                       "(less when the server is busy).", {}, None, DISCLAIMER), None)
            return unless_replaced(let_go, latest, before, held_photo.upload if held_photo else None)
        h = held_photo
        try:
            box = moved_frame(pixels, h.box, click=click, percent=percent, shift=shift,
                              flatten_lightness=self.predictor.settings.flatten_lightness)
            outputs = self.shown(check_frame(self.predictor, pixels, box, own_frame_label=h.own_frame_label),
                                 h.upload)
        except Exception:
            outputs = failed("a moved frame")
        return unless_replaced(outputs, latest, before, h.upload)

    def move_frame(self, held_photo: HeldPhoto | None, latest: LatestPhoto, evt: gr.SelectData) -> tuple:
        """A tap on the framing view: the frame goes there, at the same size (or round the spot tapped)."""
        return self.reframe(held_photo, latest, None, click=tuple(evt.index))

    def move_frame_by(self, shift: tuple[int, int]):
        """The handler of one move button."""
        def move_frame_by_a_quarter(held_photo: HeldPhoto | None, latest: LatestPhoto) -> tuple:
            return self.reframe(held_photo, latest, None, shift=shift)
        return move_frame_by_a_quarter

    def show_frame(self, held_photo: HeldPhoto | None) -> tuple:
        """The framing panel (view, slider, move buttons): shown and usable while a photo is held that can be used
        (not too small, dark, bright, blurred, black and white, or no skin), else hidden. A move button is greyed out
        where the frame is at the photo's edge (pressed, it had checked the same frame again)."""
        pixels = held_pixels(held_photo)
        if pixels is None or not held_photo.framable:
            return (gr.update(visible="hidden"), None, gr.update(value=FRAME_DEFAULT, interactive=False),
                    *[gr.update(interactive=False)] * len(MOVES))
        box = held_photo.box
        return (gr.update(visible=True), self.files.write_picture(framing_view(pixels, box)),
                gr.update(value=frame_percent(pixels, box), interactive=True),
                *[gr.update(interactive=moved_frame(pixels, box, shift=shift) != box) for _, shift in MOVES])

    def resize_frame(self, held_photo: HeldPhoto | None, latest: LatestPhoto, percent: object) -> tuple:
        """The slider let go, or a size typed into its number box: the frame resized to `percent` of the photo's
        shorter side (a number outside 1-100 taken as the nearest end; no number, or the frame's own size, no
        change)."""
        size, pixels = slider_percent(percent), held_pixels(held_photo)
        if size is None:
            return nothing_new()
        # The size the frame has, or the same frame (a tap into the number box is a release too: its answer had come
        # back while a size was being typed, and put the old one back in the box): nothing to check.
        if pixels is not None:
            box = held_photo.box
            if round(size) == frame_percent(pixels, box) or moved_frame(pixels, box, percent=size) == box:
                return nothing_new()
        return self.reframe(held_photo, latest, size)

    def redraw_frame(self, held_photo: HeldPhoto | None, percent: object) -> tuple:
        """`show_frame` after the slider: its value is the person's, left as it is, unless it was no size from 1 to
        100 (then it shows the size checked)."""
        panel, picture, slider, *moves = self.show_frame(held_photo)
        if picture is not None and (size := slider_percent(percent)) is not None and size == percent:
            slider = gr.skip()
        return panel, picture, slider, *moves  # (a photo let go hides the panel, and resets the slider)

    def around_answer(self, summary: str | None, chart_payload: dict | None, heatmap_payload: dict | None,
                      unanswered: bool, held_photo: HeldPhoto | None) -> tuple:
        """What the page shows around a new answer, in one step (in steps of their own, the panels had appeared one
        by one): the confidence panel and the heatmap shown or hidden with the note under the framing controls
        (`show_parts`), the photo box emptied when there was no answer, and the framing controls (`show_frame`)."""
        return (*show_parts(summary, chart_payload, heatmap_payload), empty_photo_if(unanswered),
                *self.show_frame(held_photo))

    def around_resized(self, summary: str | None, chart_payload: dict | None, heatmap_payload: dict | None,
                       unanswered: bool, held_photo: HeldPhoto | None, percent: object) -> tuple:
        """`around_answer` after the slider, which stays where the person put it (`redraw_frame`)."""
        return (*show_parts(summary, chart_payload, heatmap_payload), empty_photo_if(unanswered),
                *self.redraw_frame(held_photo, percent))

    def clear(self, payload: dict | None, latest: LatestPhoto) -> tuple:
        """A new photo put in: the previous answer (and its held photo) must not stay."""
        previous = latest.upload
        latest.upload = (payload or {}).get("path")  # in place: an answer being checked sees it (`unless_replaced`)
        if previous and previous != latest.upload:
            latest.replaced.add(previous)
            # Put in but never checked (a checked upload is deleted once read): not kept either.
            if replaced := uploaded_path(self.upload_folder, {"path": previous}):
                Path(replaced).unlink(missing_ok=True)
        return (WAITING, None, None, "", None, gr.update(visible="hidden"), None,
                gr.update(value=FRAME_DEFAULT, interactive=False),
                *[gr.update(interactive=False)] * len(MOVES),
                gr.update(interactive=False))  # the check button waits for `show_photo`

    def show_photo(self, payload: dict | None, latest: LatestPhoto) -> tuple:
        """A photo the browser cannot show is replaced by a copy it can; a file that is no photo, or a JPEG whose
        picture data is damaged, is answered at once (it had shown as a broken picture until Check was pressed), and
        the photo box emptied; the check button comes back. Outputs: the photo box, the button, the answer and the
        guidance."""
        put_in, copy, unusable = (payload or {}).get("path"), None, None
        try:
            path = uploaded_path(self.upload_folder, payload) if put_in else None
            copy = browser_copy(path, self.files)
        except ImageError as err:  # no photo: answered now, and not kept
            unusable = unusable_file(err)
            Path(path).unlink(missing_ok=True)
        except Exception:  # whatever went wrong, the button must come back; checking the upload says what is wrong
            log.exception("copying a photo for the browser failed")  # not the payload, which names the photo
        if latest.upload != put_in:  # another photo was put in meanwhile: its own `show_photo` decides
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if unusable is not None:
            return None, gr.update(interactive=True), unusable.summary, unusable.guidance
        return gr.skip() if copy is None else copy, gr.update(interactive=True), gr.skip(), gr.skip()


def build_app(predictor: Predictor) -> gr.Blocks:
    """The page: its layout, and which `PageHandlers` method each event runs."""
    page = PageHandlers(predictor, get_upload_folder())  # the folder Gradio gives the photo box below
    with gr.Blocks(title="SpotCheck", analytics_enabled=False,
                   delete_cache=(CACHE_SECONDS, CACHE_SECONDS)) as app:
        gr.Markdown("# SpotCheck\nIs a small red or brown spot a harmless cherry angioma, or a mole to keep an eye on?")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        with gr.Row():
            with gr.Column():
                # One height for every photo: a portrait photo had pushed the button below a desktop's fold.
                photo = never_downloading(gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                                   label="Photo of the spot", elem_id="photo", height=PHOTO_HEIGHT,
                                                   alt_text="Your photo of the spot"))
                check = gr.Button("Check this spot", variant="primary", elem_id="check")
                gr.Markdown(PHOTO_TIPS)
            with gr.Column():  # on a phone this column comes below the first: the answer right after the button
                summary = gr.Markdown(WAITING, elem_id="answer")
                chart = gr.Label(label=CONFIDENCE_LABEL, num_top_classes=3, elem_id="confidence", visible="hidden")
                # No share button: it posts to Hugging Face Spaces, which an offline app must not (and cannot) do.
                heatmap = gr.Image(label="Where it looked (red: most)", interactive=False,
                                   elem_id="heatmap", buttons=["fullscreen", "download"], visible="hidden",
                                   alt_text="The framed spot, and beside it the same coloured where the model "
                                            "looked most")
                with gr.Column(visible="hidden", elem_id="framing-panel") as framing_panel:  # shown with a photo
                    framing = gr.Image(label="Frame checked: tap the spot to frame it", buttons=[], interactive=False,
                                       elem_id="framing", alt_text="Your photo with the checked frame drawn on it")
                    frame_size = gr.Slider(1, 100, value=FRAME_DEFAULT, step=1, interactive=False,
                                           elem_id="frame-size", label="Frame size (% of the photo's shorter side)",
                                           buttons=[])
                    moves = []
                    for pair in (MOVES[:2], MOVES[2:]):  # two to a row: side by side on a phone too
                        with gr.Row():
                            moves += [gr.Button(label, size="sm", interactive=False, min_width=0) for label, _ in pair]
                    note = gr.Markdown(elem_id="frame-note")
        guidance = gr.Markdown(elem_id="guidance")
        # State is not part of the API: /check returns the four outputs. The held photo lives in this
        # browser session's memory only, and goes with a new upload, the closed tab or HELD_SECONDS.
        unanswered = gr.State(False)
        held = gr.State(None, time_to_live=HELD_SECONDS)
        latest = gr.State(LatestPhoto())  # each page gets its own copy
        outputs = [summary, chart, heatmap, guidance]
        private = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
        # `input` fires only for the user's own changes (upload, camera, paste, clear), not when the page empties the
        # box (around_answer); "multiple": every new photo clears the page (by default a photo put in right after
        # another was skipped).
        framing_controls = [framing_panel, framing, frame_size, *moves]
        cleared = photo.input(page.clear, inputs=[photo, latest], outputs=[*outputs, held, *framing_controls, check],
                              preprocess=False, trigger_mode="multiple", **private)
        parts = {"inputs": [summary, chart, heatmap], "outputs": [chart, heatmap, note], "preprocess": False, **private}
        cleared.then(show_parts, **parts)
        cleared.then(
            # Queued, two at a time: many HEIC photos put in at once must not each start a decoder beside the checks.
            page.show_photo, inputs=[photo, latest], outputs=[photo, check, summary, guidance], preprocess=False,
            show_progress="hidden", api_visibility="private", concurrency_limit=2, concurrency_id="browser-copies")
        # After each answer, one step shows what goes around it (`around_answer`).
        around = {"inputs": [summary, chart, heatmap, unanswered, held],
                  "outputs": [chart, heatmap, note, photo, *framing_controls], "preprocess": False, **private}
        # "always_last": a press while a check runs (another photo put in meanwhile) is answered after it, not dropped.
        check.click(page.answer, inputs=[photo, held, latest], outputs=[*outputs, unanswered, held], api_name="check",
                    preprocess=False, trigger_mode="always_last").then(
            page.around_answer, **around).then(
            None, js=SHOW_ANSWER, **private)
        # A moved frame sets the slider to its size; a resized one leaves the slider where the person put it, and
        # "always_last" checks its last position when keys or drags come faster than the answers. Not preprocessed:
        # Gradio's own check of a number typed outside 1-100 had put "Error" over the whole answer (resize_frame
        # takes the nearest end instead).
        # The page stays where it is: the note under the buttons says the new answer, so that a finger can nudge the
        # frame again (scrolling to the answer had thrown a phone's page about 800 px up each time).
        moved = {"outputs": [*outputs, unanswered, held], "preprocess": False, "api_visibility": "private"}
        framing.select(page.move_frame, inputs=[held, latest], trigger_mode="once", **moved).then(
            page.around_answer, **around)
        for button, (_, shift) in zip(moves, MOVES):
            button.click(page.move_frame_by(shift), inputs=[held, latest], trigger_mode="once", **moved).then(
                page.around_answer, **around)
        frame_size.release(page.resize_frame, inputs=[held, latest, frame_size], trigger_mode="always_last",
                           **moved).then(page.around_resized, **around | {"inputs": [*around["inputs"], frame_size]})
    return app


def host_problem(host: str) -> str | None:
    """Why this machine cannot serve at `host` (a name that does not resolve, an address that is not this machine's),
    or None. Gradio's own failure had been worded as a busy port, or was a traceback for an IPv6 address."""
    if ":" in host:  # Gradio writes its address as http://{host}:{port}, without the brackets IPv6 needs
        return "Gradio takes a host name or an IPv4 address, not an IPv6 one"
    try:
        # IPv4, as uvicorn binds a host name (a "localhost" listed as ::1 first, with IPv6 off, had been refused).
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, family=socket.AF_INET,
                                                             type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as err:
        return err.strerror or str(err)
    return None


def certificate_problem(certfile: str, keyfile: str) -> str | None:
    """Why HTTPS cannot be served with this certificate and key, or None. The server had failed only once started,
    worded as a busy port; a key with a passphrase had been asked for at the terminal."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile, password=lambda: b"")
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH":
            return "the key is not this certificate's"
        return "they must be a PEM certificate and its PEM private key, without a passphrase"
    except OSError as err:  # e.g. a key this user may not read
        return f"cannot read them ({err.strerror or err})"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve.app", description=__doc__)
    # Gradio had failed on a port over 65535 with an OverflowError traceback, and on 0 with httpx's.
    parser.add_argument("--port", type=int_from(1, 65535, "port_number"), default=7860, help="default: 7860")
    parser.add_argument("--host", default="127.0.0.1",
                        help="default: 127.0.0.1 (this machine only); use 0.0.0.0 to serve other machines")
    parser.add_argument("--checkpoint", type=named_path, default=None,
                        help="model checkpoint (default: the embedded model)")
    parser.add_argument("--ssl-certfile", default=None,
                        help="serve HTTPS with this certificate: phone browsers allow the live camera only over HTTPS")
    parser.add_argument("--ssl-keyfile", default=None, help="the certificate's private key")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="run the network in PyTorch or ONNX Runtime (default: ONNX Runtime when exported)")
    args = parser.parse_args(argv)
    if (problem := host_problem(args.host)) is not None:
        parser.error(f"--host {args.host}: cannot serve at this address ({problem})")
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        parser.error("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    for flag, path in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)):
        if path is not None and not Path(path).is_file():
            parser.error(f"{flag} {path}: no such file")
    if args.ssl_certfile is not None and (problem := certificate_problem(args.ssl_certfile, args.ssl_keyfile)):
        parser.error(f"--ssl-certfile {args.ssl_certfile} and --ssl-keyfile {args.ssl_keyfile}: {problem}")
    try:
        predictor = Predictor(args.checkpoint, backend=args.backend)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")  # as batch scoring does
    uploads = private_upload_folder()
    if uploads is not None:  # Gradio's cache cleaning misses uploads cut off midway
        sweep_every(uploads, CACHE_SECONDS)
    app = build_app(predictor)
    try:
        app.queue(default_concurrency_limit=2, max_size=64).launch(
            server_name=args.host, server_port=args.port, share=False, max_file_size=MAX_UPLOAD,
            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, ssl_verify=args.ssl_certfile is None,
            theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                    font_mono=["ui-monospace", "monospace"]),
            footer_links=[], head=PAGE_SCRIPT, css=PAGE_STYLE,
            # No run history (each check kept in the browser, photo name and answer, for the next person at a shared
            # device, with an offer to upload it to Hugging Face), no usage dashboard; and serve.guard's limits.
            run_history=False, enable_monitoring=False, app_kwargs={"middleware": [Middleware(RequestGuard)]},
            quiet=True, prevent_thread_lock=True,  # Gradio's banner suggests a public share link: not for this app
        )
    except OSError as err:  # Gradio says "Cannot find empty port" and advises a launch() argument: not for users
        detail = "" if "empty port" in str(err) else f" ({err})"
        raise SystemExit(f"error: cannot serve at {args.host}:{args.port} (the port is in use, or under 1024 without "
                         f"the right to serve there): choose another with --port N{detail}")
    print(f"SpotCheck is running at {app.local_url} (offline; stop it with Ctrl+C)", flush=True)
    serve_until_stopped(app)


def serve_until_stopped(app: gr.Blocks) -> None:
    """Serve until Ctrl+C or a `kill`, then close the server; more of them are then ignored (`ignore_stop_signals`:
    closing takes a few seconds, then the uploads are deleted). With Gradio's `block_thread` a second one had stopped
    the closing with a KeyboardInterrupt traceback. A signal already ignored (`nohup`'s SIGHUP) stays so."""
    stops: list[int] = []
    for number in STOP_SIGNALS:
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, lambda number, _frame: stops.append(number))
    while app.is_running and not stops:
        time.sleep(0.1)
    ignore_stop_signals()
    with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) cannot be written to: close all the same
        print("stopping: closing the server", flush=True)
    app.close(verbose=False)


if __name__ == "__main__":
    # A `kill` (systemd, docker stop) stops the server as Ctrl+C does, so that the uploads and every copy made of
    # them are deleted on the way out (atexit): with SIGTERM they had stayed on disk, and a restarted server served
    # them. Either one while the model loads ends it with "interrupted", not a traceback.
    run_command(main)
