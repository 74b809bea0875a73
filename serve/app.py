"""The SpotCheck web page: `python -m serve.app [--port N] [--checkpoint PATH]`.

A thin Gradio layer over `check_spot`, a plain function that the tests call
directly. Runs fully offline: analytics off, system fonts only, no share link;
uploads are deleted once answered.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import argparse  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from data.images import ImageError, read_image  # noqa: E402
from model.predictor import Predictor, overlay_heatmap  # noqa: E402
from serve.guidance import DISCLAIMER, GUIDANCE, HEADLINES, PHOTO_TIPS  # noqa: E402

MAX_UPLOAD = "20mb"


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


def build_app(predictor: Predictor) -> gr.Blocks:
    def answer(path):
        a = check_spot(predictor, path)
        return a.summary, a.probabilities or None, a.heatmap, a.guidance

    with gr.Blocks(title="SpotCheck", analytics_enabled=False) as app:
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
        check.click(answer, inputs=photo, outputs=[summary, chart, heatmap, guidance], api_name="check")
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1", help="use 0.0.0.0 to serve other machines")
    parser.add_argument("--checkpoint", default=None, help="model checkpoint (default: the embedded model)")
    args = parser.parse_args(argv)
    app = build_app(Predictor(args.checkpoint))
    app.queue(default_concurrency_limit=2, max_size=64).launch(
        server_name=args.host, server_port=args.port, share=False, max_file_size=MAX_UPLOAD,
        theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                font_mono=["ui-monospace", "monospace"]),
        footer_links=[],
    )


if __name__ == "__main__":
    main()
