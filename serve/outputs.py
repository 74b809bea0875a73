"""The files behind the web page's outputs: one file per picture and per confidence panel, deleted soon after."""
from __future__ import annotations

import json
import os
import tempfile

import cv2
import numpy as np

from serve.uploads import own_temp_folder, sweep_every


class OutputFiles:
    """The page's output pictures (heatmap, framing view), each written to a PNG file of its own, and the
    confidence panel's values, written to a JSON file (see `write_label`).

    Gradio stores a picture returned as an array in its cache under a name taken from the picture's
    content, writing the file in place: when the same photo is checked twice at once, one answer's
    browser could then fetch a file the other answer is half-way through rewriting. A file path is
    instead copied into the cache under its own name, so every answer gets a distinct file. These
    files are only read once, by that copy; a background thread deletes them after one to two minutes.
    """

    def __init__(self, keep_seconds: float = 60):
        self.folder, self.keep_seconds = own_temp_folder("spotcheck-outputs-"), keep_seconds
        sweep_every(self.folder, keep_seconds)

    def write_picture(self, picture: np.ndarray) -> str:
        """Save an RGB uint8 picture as a new PNG file and return its path."""
        fd, path = tempfile.mkstemp(suffix=".png", dir=self.folder)
        os.close(fd)
        if not cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        return path

    def write_label(self, label: str, probabilities: dict[str, float]) -> str:
        """The confidence panel's value as a JSON file, the one way gr.Label takes a heading other than the top
        group: the heading (and the API's `label`) is the decision, so a spot below the vascular bar reads
        "unsure" above its bars, never "vascular"."""
        ranked = sorted(probabilities.items(), key=lambda item: item[1], reverse=True)
        fd, path = tempfile.mkstemp(suffix=".json", dir=self.folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"label": label, "confidences": [{"label": c, "confidence": p} for c, p in ranked]}, f)
        return path
