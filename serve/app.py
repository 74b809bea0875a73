"""The SpotCheck web page: `python -m serve.app [--port N] [--checkpoint PATH] [--backend auto|torch|onnx]`.

A thin Gradio layer over `check_spot`, a plain function that the tests call
directly. Runs fully offline: analytics off, system fonts only, no share link;
uploads are deleted once answered.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import argparse  # noqa: E402
import logging  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from gradio.data_classes import ImageData  # noqa: E402

from data.images import ImageError, read_image  # noqa: E402
from model.predictor import BACKENDS, Predictor, overlay_heatmap  # noqa: E402
from serve.guidance import DISCLAIMER, GUIDANCE, HEADLINES, PHOTO_TIPS  # noqa: E402

MAX_UPLOAD = "20mb"
CACHE_SECONDS = 900  # Gradio's own copies (the heatmaps, which show the framed spot) are deleted after this
HEATMAP_DISPLAY = 256  # the heatmap is shown enlarged from the model's input size (112 px)
log = logging.getLogger("spotcheck")


@dataclass
class Answer:
    summary: str  # Markdown: the headline and why
    probabilities: dict[str, float]  # for the bar chart; empty when there is no answer
    heatmap: np.ndarray | None  # the framed spot with the heatmap over it
    guidance: str  # Markdown: what this means and what to do


def check_spot(predictor: Predictor, path: str | None) -> Answer:
    """Answer one uploaded photo; never raises for a bad file."""
    if not path:
        return Answer("Upload or take a photo of the spot first.", {}, None, "")
    if not Path(path).exists():  # answered before: uploads are deleted once answered
        return Answer("### Please upload the photo again\n\nThis photo is no longer on the server: each photo "
                      "is deleted as soon as it has been answered.", {}, None, "")
    try:
        image = read_image(path)
        prediction = predictor.predict(image)
    except ImageError as err:
        return Answer(f"### This file cannot be used\n\n{str(err).capitalize()}. Please upload a photo "
                      "(JPEG, PNG, WebP, BMP or TIFF).", {}, None, "")
    finally:
        Path(path).unlink(missing_ok=True)  # uploads are not kept
    label = prediction.label
    note = prediction.framing.note() if prediction.framing else ""
    summary = f"### {HEADLINES[label]}\n\n**Why:** {prediction.reason}.\n\n{note}"
    return Answer(summary, prediction.probabilities, overlay_heatmap(prediction.square, prediction.heatmap),
                  GUIDANCE[label])


def uploaded_path(photo: gr.Image, payload: dict | None) -> str | None:
    """The uploaded file itself, for `check_spot` to read (the click runs with preprocess=False).

    gr.Image's own preprocessing opens every upload with PIL before the handler
    runs: a file that is not an image then fails inside Gradio (the page shows
    only "Error" next to the previous answer), and uploads it converts (RGBA,
    grayscale, rotated) are re-saved as copies, so deleting the handler's file
    would leave the original behind. Gradio has already checked that the path
    is inside its upload folder.
    """
    if not payload:
        return None
    if payload.get("path"):
        return str(payload["path"])
    return photo.preprocess(ImageData(**payload))  # e.g. a base64 data URL sent through the API


def build_app(predictor: Predictor) -> gr.Blocks:
    def answer(payload):
        """The page's outputs, plus whether the photo box should be emptied (no answer: upload another)."""
        try:
            a = check_spot(predictor, uploaded_path(photo, payload))
        except Exception:  # never a bare "Error" on the page; the log has the details
            log.exception("checking %s failed", payload)
            return ("### Something went wrong\n\nSpotCheck could not check this photo. Please try again, "
                    "or try another photo.", None, None, "", True)
        heatmap = a.heatmap
        if heatmap is not None and heatmap.shape[0] < HEATMAP_DISPLAY:
            heatmap = cv2.resize(heatmap, (HEATMAP_DISPLAY, HEATMAP_DISPLAY), interpolation=cv2.INTER_CUBIC)
        return a.summary, a.probabilities or None, heatmap, a.guidance, heatmap is None

    def clear():  # a new photo: the previous answer must not stay next to it
        return "", None, None, ""

    def empty_photo_if(unanswered: bool):  # e.g. a file that is not an image shows as a broken picture
        return None if unanswered else gr.skip()

    with gr.Blocks(title="SpotCheck", analytics_enabled=False,
                   delete_cache=(CACHE_SECONDS, CACHE_SECONDS)) as app:
        gr.Markdown("# SpotCheck\nIs a small red or brown spot a harmless cherry angioma, or a mole to keep an eye on?")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                 label="Photo of the spot", elem_id="photo")
                check = gr.Button("Check this spot", variant="primary", elem_id="check")
                gr.Markdown(PHOTO_TIPS)
            with gr.Column():
                summary = gr.Markdown(elem_id="answer")
                chart = gr.Label(label="Confidence for each group", num_top_classes=3, elem_id="confidence")
                heatmap = gr.Image(label="Where the model looked (framed spot)", interactive=False, elem_id="heatmap")
        guidance = gr.Markdown(elem_id="guidance")
        unanswered = gr.State(False)  # State is not part of the API: /check returns the four outputs
        outputs = [summary, chart, heatmap, guidance]
        # `input` fires only for the user's own changes (upload, camera, paste, clear), not for empty_photo_if.
        photo.input(clear, outputs=outputs, queue=False, show_progress="hidden", api_visibility="private")
        check.click(answer, inputs=photo, outputs=[*outputs, unanswered], api_name="check", preprocess=False).then(
            empty_photo_if, inputs=unanswered, outputs=photo, queue=False, show_progress="hidden",
            api_visibility="private")
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1", help="use 0.0.0.0 to serve other machines")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint (default: the embedded model)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="run the network in PyTorch or ONNX Runtime (default: ONNX Runtime when exported)")
    args = parser.parse_args(argv)
    app = build_app(Predictor(args.checkpoint, backend=args.backend))
    app.queue(default_concurrency_limit=2, max_size=64).launch(
        server_name=args.host, server_port=args.port, share=False, max_file_size=MAX_UPLOAD,
        theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                font_mono=["ui-monospace", "monospace"]),
        footer_links=[],
    )


if __name__ == "__main__":
    main()
