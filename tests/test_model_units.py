"""Unit checks of the calibration, heatmap, preprocessing, checkpoint/export safety, decision boundaries and framing."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import data.images
from data.datasets import CLASSES
from data.framing import frame_spot, spot_at
from data.images import ImageError, decode_image
from model.checkpoint import DEFAULT_CHECKPOINT, FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from model.decision import Calibration, decide
from model.export import export, onnx_paths
from model.net import SpotNet
from model.predictor import (HEATMAP_GAP, Predictor, class_activation_map, feature_stride, heatmap_beside, onnx_problem,
                             overlay_heatmap)
from tests.conftest import COLOURS, spot_photo


def small_checkpoint(size: int = 32, mean=(0.5,) * 3, std=(0.25,) * 3) -> dict:
    """A fresh SpotNet with the given preprocessing, small enough to export in a second or two."""
    torch.manual_seed(0)
    return {"format": FORMAT, "model": SpotNet().state_dict(), "classes": list(CLASSES),
            "preprocess": {"size": size, "mean": list(mean), "std": list(std)},
            "calibration": {"temperature": 1.0, "unsure_below": 0.5, "vascular_min": 0.9},
            "meta": {"split_seed": 0}}


def test_probabilities_are_the_softmax_of_logits_over_the_calibrated_temperature(predictor, monkeypatch):
    """classify() divides the raw logits by calibration.temperature before the softmax."""
    prepared = predictor.prepare(spot_photo("nevus", seed=5))
    logits = predictor.network(prepared.input[None])[0][0].astype(np.float64)
    tops = []
    for temperature in (predictor.calibration.temperature, 3.0):
        monkeypatch.setattr(predictor, "calibration", replace(predictor.calibration, temperature=temperature))
        probabilities = predictor.classify([prepared])[0].probabilities
        expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        assert list(probabilities) == list(CLASSES)
        assert list(probabilities.values()) == pytest.approx(expected, abs=1e-6)
        tops.append(max(probabilities.values()))
    assert tops[1] < tops[0]  # a hotter softmax is less sure


def test_heatmap_is_the_top_class_activation_map(predictor):
    """The heatmap is the top class's head weights over the feature maps, ReLU'd, each cell placed on the input
    pixel it is centred on (cubic between them) and scaled to max 1."""
    prepared = predictor.prepare(spot_photo("nevus", size=200, radius=30, seed=3))
    prediction = predictor.classify([prepared])[0]
    logits, maps, _ = predictor.network(prepared.input[None])
    head = load_checkpoint(DEFAULT_CHECKPOINT)["model"]["head.weight"].numpy()

    def cam(k: int) -> np.ndarray:
        cells = np.maximum(np.einsum("c,chw->hw", head[k], maps[0]), 0).astype(np.float32)
        side = predictor.settings.size
        m = cv2.warpAffine(cells, np.float32([[32, 0, 0], [0, 32, 0]]), (side, side),
                           flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        m = np.clip(m, 0, None)
        return m / m.max()

    top = int(logits[0].argmax())
    assert top != 0, "the photo must make a class other than the first the top one"
    assert prediction.heatmap.shape == (predictor.settings.size, predictor.settings.size)
    assert prediction.heatmap.max() == pytest.approx(1.0)
    assert np.allclose(prediction.heatmap, cam(top), atol=1e-4)
    assert not np.allclose(prediction.heatmap, cam(0), atol=1e-2)


def test_model_input_is_normalised_with_the_checkpoints_mean_and_std(tmp_path):
    """prepare() turns the framed square into (x/255 - mean)/std, CHW, with the mean and std the checkpoint stores."""
    mean, std = (0.6, 0.4, 0.3), (0.2, 0.3, 0.4)
    save_checkpoint(tmp_path / "m.pt", small_checkpoint(size=48, mean=mean, std=std))
    predictor = Predictor(tmp_path / "m.pt", backend="torch")
    assert predictor.settings.mean == mean and predictor.settings.std == std
    prepared = predictor.prepare(spot_photo("vascular", seed=1))
    expected = (prepared.square.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    assert prepared.input.shape == (3, 48, 48) and prepared.input.dtype == np.float32
    assert np.allclose(prepared.input, expected.transpose(2, 0, 1), atol=1e-5)


class _TouchOnUnpickle:
    """Unpickling this runs Path.touch(marker): code a checkpoint must never get to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_carrying_pickled_code_is_refused_without_running_it(tmp_path):
    """load_checkpoint() unpickles tensors and plain values only: a __reduce__ payload raises and never runs."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _TouchOnUnpickle(marker)}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert not marker.exists()
    assert "not a readable SpotCheck checkpoint" in str(refused.value)


@pytest.mark.parametrize("wrong", [
    lambda out: out + 1e-3 * max(1.0, float(np.abs(out).max())),  # off by 10x the tolerance
    lambda out: np.full_like(out, np.nan),
    lambda out: out[..., :1],  # another shape
], ids=["off", "nan", "shape"])
def test_export_refuses_a_graph_that_onnx_runtime_runs_differently(tmp_path, monkeypatch, wrong):
    """export() compares ONNX Runtime with PyTorch: outputs that differ raise and write nothing."""
    import onnxruntime as ort

    path = tmp_path / "m.pt"
    save_checkpoint(path, small_checkpoint())
    real_run = ort.InferenceSession.run

    def off_run(self, *args, **kwargs):
        return [wrong(out) for out in real_run(self, *args, **kwargs)]

    monkeypatch.setattr(ort.InferenceSession, "run", off_run)
    with pytest.raises(RuntimeError, match="does not reproduce PyTorch"):
        export(path)
    assert not any(p.exists() for p in onnx_paths(path))


def test_a_sidecar_of_another_format_is_refused(tmp_path):
    """An export whose sidecar says another format is unusable, however sound the rest of it is."""
    path = tmp_path / "spotcheck.pt"
    onnx_path, json_path = onnx_paths(path)
    shipped_onnx, shipped_json = onnx_paths(DEFAULT_CHECKPOINT)
    shutil.copyfile(shipped_onnx, onnx_path)
    shutil.copyfile(shipped_json, json_path)
    assert onnx_problem(path) is None  # the copy as shipped is usable
    sidecar = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**sidecar, "format": "something-else"}))
    assert "not a SpotCheck ONNX sidecar" in onnx_problem(path)
    with pytest.raises(CheckpointError, match="not a SpotCheck ONNX sidecar"):
        Predictor(path, backend="onnx")


BOUNDARY = Calibration(temperature=1.0, unsure_below=0.5, vascular_min=0.75, ood_distance_max=10.0)


@pytest.mark.parametrize("probabilities, distance, label", [
    ([0.75, 0.125, 0.125], 0.0, "vascular"),  # exactly at vascular_min: answered
    ([np.nextafter(0.75, 0), 0.125, 0.125], 0.0, "unsure"),  # just under it
    ([0.125, 0.75, 0.125], 10.0, "nevus"),  # exactly at ood_distance_max: still a spot the model knows
    ([0.125, 0.75, 0.125], np.nextafter(10.0, 11), "unsure"),  # just over it
    ([0.25, 0.5, 0.25], 0.0, "nevus"),  # exactly at unsure_below: answered
])
def test_decision_boundaries(probabilities, distance, label):
    """decide(): a value exactly at a threshold passes it; only strictly beyond (or below) is unsure."""
    assert decide(np.array(probabilities), float(distance), CLASSES, BOUNDARY)[0] == label


def assert_close_crop_around(box, centre, most: int) -> None:
    x0, y0, x1, y1 = box
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1
    assert x1 - x0 <= most and y1 - y0 <= most


def test_framing_prefers_a_central_spot_to_a_bar_along_the_edge():
    """A dark ruler-like bar touching the edge scores less than a smaller spot in the middle."""
    image = spot_photo("nevus", size=400, radius=22, seed=1)
    image[388:] = (40, 40, 45)  # a 12-pixel bar along the bottom edge, more contrasting than the spot
    framing = frame_spot(image)
    assert framing.found
    assert_close_crop_around(framing.box, (200, 200), most=120)


def test_framing_ignores_a_pen_ring_around_the_spot():
    """A thin ink ring (low solidity), though larger and darker, is not taken for the spot inside it."""
    image = spot_photo("nevus", size=400, radius=14, seed=2)
    cv2.circle(image, (200, 200), 110, (40, 60, 150), 18, cv2.LINE_AA)
    framing = frame_spot(image)
    assert framing.found and framing.spots == 1
    assert_close_crop_around(framing.box, (200, 200), most=80)


def test_a_spot_filling_the_frame_gets_the_largest_square_around_it():
    """A spot whose box covers over FILLS_FRAME of the photo is already framed: the frame is the largest square the
    photo holds, around the spot (the network sees a square; a box of the whole photo would lose its sides unsaid)."""
    image = spot_photo("nevus", size=300, radius=0, seed=3)[:200]
    cv2.ellipse(image, (150, 100), (110, 75), 0, 0, 360, COLOURS["nevus"], -1, cv2.LINE_AA)
    framing = frame_spot(image)
    x0, y0, x1, y1 = framing.box
    assert framing.found and abs(x0 - 50) <= 2 and (y0, x1 - x0, y1) == (0, 200, 200)
    off_centre = spot_photo("nevus", size=400, radius=0, seed=3)[:225]
    cv2.circle(off_centre, (110, 112), 100, COLOURS["nevus"], -1, cv2.LINE_AA)
    framing = frame_spot(off_centre)
    assert framing.found and framing.box == (0, 0, 225, 225)  # the square the photo holds around the spot, not its middle


def test_a_tap_on_a_spot_filling_the_photo_frames_it_as_the_automatic_frame_does():
    """Tapped near its edge, a spot that fills a wide photo gets the largest square around the spot: it had been
    centred on the tap, and cut off the spot's far side (60 px of this one)."""
    image = spot_photo("nevus", size=400, radius=0, seed=3)[:200]
    cv2.ellipse(image, (150, 100), (90, 75), 0, 0, 360, COLOURS["nevus"], -1, cv2.LINE_AA)  # x 60-240
    automatic = frame_spot(image).box
    assert abs(automatic[0] - 50) <= 2 and automatic[2] - automatic[0] == 200
    for tap in ((220, 100), (80, 100), (150, 30)):
        assert spot_at(image, tap) == automatic


def test_decode_image_refuses_bytes_over_the_file_limit(monkeypatch):
    """decode_image() checks the size of the bytes it is handed itself, not only read_image."""
    ok, encoded = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    data_bytes = encoded.tobytes()
    assert ok and decode_image(data_bytes).shape == (64, 64, 3)
    monkeypatch.setattr(data.images, "MAX_FILE_BYTES", len(data_bytes) - 1)
    with pytest.raises(ImageError, match="too large"):
        decode_image(data_bytes)


def test_overlay_blends_the_jet_colour_at_045_over_the_square():
    """overlay_heatmap(): 55% square + 45% JET colour (hot: dark red, cold: dark blue)."""
    square = np.full((40, 40, 3), (100, 150, 200), np.uint8)
    heatmap = np.zeros((40, 40), np.float32)
    heatmap[:20] = 1.0
    overlay = overlay_heatmap(square, heatmap)
    hot = 0.55 * np.array([100, 150, 200]) + 0.45 * np.array([128, 0, 0])
    cold = 0.55 * np.array([100, 150, 200]) + 0.45 * np.array([0, 0, 128])
    assert overlay.dtype == np.uint8 and overlay.shape == square.shape
    assert np.abs(overlay[:20].astype(float) - hot).max() <= 1
    assert np.abs(overlay[20:].astype(float) - cold).max() <= 1
    assert (overlay[:20] != square[:20]).any(axis=2).all()


def test_the_heatmap_is_shown_beside_the_spot_it_covers():
    """heatmap_beside(): the framed spot untouched on the left (the colours hide the spot they point at), a white
    gap, then the overlay."""
    square = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    heatmap = np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)
    picture = heatmap_beside(square, heatmap)
    assert picture.dtype == np.uint8 and picture.shape == (40, 80 + HEATMAP_GAP, 3)
    assert np.array_equal(picture[:, :40], square)
    assert (picture[:, 40:40 + HEATMAP_GAP] == 255).all()
    assert np.array_equal(picture[:, 40 + HEATMAP_GAP:], overlay_heatmap(square, heatmap))


@pytest.mark.parametrize("size, cells", [(112, 4), (48, 2), (160, 5)])
def test_each_heatmap_cell_is_drawn_where_it_looks(size, cells):
    """A 3x3, padding-1, stride-2 convolution centres output j on input 2j: after the network's five halvings the
    cell (i, j) looks at pixel (32 i, 32 j). One hot cell must be at its full value there and nowhere near the other
    cells' pixels (a plain resize put it up to 18 px off; the cubic curve overshoots a little beside it, and past the
    last cell the heatmap keeps its value)."""
    assert feature_stride(size, cells) == 32
    for i, j in ((0, 0), (1, cells - 1), (cells - 1, 1)):
        maps = np.zeros((2, cells, cells), np.float32)
        maps[0, i, j] = 1
        heatmap = class_activation_map(maps, np.float32([1, 0]), size)
        assert heatmap.shape == (size, size) and heatmap[32 * i, 32 * j] > 0.75
        others = [heatmap[32 * a, 32 * b] for a in range(cells) for b in range(cells) if (a, b) != (i, j)]
        assert max(others) < 1e-4
