"""From a photo to an answer: the one code path the app, batch scoring and evaluation share.

    predictor = Predictor()                       # the embedded default model
    result = predictor.predict_file("spot.jpg")   # or .predict(rgb_array)
    result.label, result.reason, result.probabilities

`prepare` (checks + framing + eval preset, numpy only) and `classify` (the
network on a batch) are separate so that `predict_files`, which batch scoring
and evaluation use, can decode in parallel threads and run the network on
whole batches.

The network runs in one of two backends, with the same answers (tests/test_onnx.py):

- "torch": the checkpoint (`spotcheck.pt`) in PyTorch;
- "onnx": the export beside it (`spotcheck.onnx` + `spotcheck.json`, written
  by `python -m model.export`) in ONNX Runtime. This path never imports torch,
  so the app and batch scoring can run where only onnxruntime is installed.

`backend="auto"` (the default) picks ONNX Runtime when the export exists,
matches the checkpoint and onnxruntime is installed (it is the faster one on a
CPU, see bench/results.md), and PyTorch otherwise.

torch is imported only inside the torch backend.
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data.framing import Framing
from data.images import ImageError, analysis_copy, read_image, working_copy
from data.presets import EvalSettings, eval_preset
from data.quality import photo_problem
from model.checkpoint import (CheckpointError, checkpoint_path, network_from, ood_layer_of, read_checkpoint,
                              served_gaps, sha256_of)
from model.decision import Calibration, FeatureDistance, decide, softmax, unlike_training
from model.export import EXPORT_SUFFIXES, SIDECAR_FORMAT, onnx_paths

BACKENDS = ("auto", "torch", "onnx")


@dataclass
class Prepared:
    """A photo checked, framed and turned into model input."""

    input: np.ndarray  # (3, size, size) float32
    square: np.ndarray  # the framed spot, (size, size, 3) uint8 RGB
    framing: Framing
    problem: str | None  # why the photo cannot be judged, if it cannot


@dataclass
class Prediction:
    label: str  # vascular | nevus | other | unsure
    reason: str  # in plain words: why this answer
    probabilities: dict[str, float]  # calibrated
    confidence: float  # the top probability
    heatmap: np.ndarray = field(repr=False)  # (size, size) in [0, 1]: where the model looked
    square: np.ndarray = field(repr=False)  # the framed spot the model saw
    framing: Framing
    problem: str | None  # what is wrong with the photo itself (data.quality), if anything
    unlike_training: bool  # its features are far from every training group's (the out-of-distribution check)

    @property
    def top(self) -> str:
        """The most probable group (the answer before the decision rule, which may hold it back as unsure)."""
        return max(self.probabilities, key=self.probabilities.get)

    @property
    def judged(self) -> bool:
        """Whether the probabilities say anything about this photo: not when the photo is unusable, or unlike the
        photos the model was trained on (it is `unsure` then, whatever they are), or when they are not numbers."""
        return not self.problem and not self.unlike_training and bool(np.isfinite(self.confidence))  # argmax: a NaN


class _TorchEngine:
    """The network in PyTorch, from the checkpoint."""

    def __init__(self, checkpoint: dict[str, Any], threads: int | None):
        import torch

        self._torch = torch
        self.model = network_from(checkpoint)
        if threads:
            torch.set_num_threads(threads)
        self.head_weight = self.model.head.weight.detach().numpy()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._torch.inference_mode():
            return tuple(t.numpy() for t in self.model.forward_with_maps(self._torch.from_numpy(x)))


@dataclass
class _Export:
    """An ONNX export read and checked: the graph's bytes (read once, so the file checked is the file run)."""

    graph: bytes
    sidecar: dict[str, Any]


class _OnnxEngine:
    """The exported graph in ONNX Runtime; the head's weights (for the heatmap) come from the sidecar."""

    def __init__(self, export: _Export, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep rather than spin: batch scoring decodes images in other threads meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(export.graph, options, providers=["CPUExecutionProvider"])
        sidecar = export.sidecar
        self.input, self.outputs = sidecar["input"], list(sidecar["outputs"])
        self.head_weight = np.asarray(sidecar["head"]["weight"], np.float32)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outputs = self.session.run(self.outputs, {self.input: x})
        if len(outputs) == 2:  # exports before 2026-12: the distance measured the last feature maps
            outputs.append(outputs[1].mean(axis=(2, 3)))
        return tuple(outputs)


def onnx_problem(checkpoint: str | os.PathLike | None = None) -> str | None:
    """Why the ONNX export of `checkpoint` cannot be used, or None when it can."""
    return _read_export(checkpoint)[1]


def _read_export(checkpoint: str | os.PathLike | None) -> tuple[_Export | None, str | None]:
    """(the export, None) for a usable export of `checkpoint`, else (None, why not)."""
    checkpoint = checkpoint_path(checkpoint)
    onnx_path, json_path = onnx_paths(checkpoint)
    if not onnx_path.is_file() or not json_path.is_file():
        return None, f"no ONNX export of {checkpoint.name} (run: python -m model.export --checkpoint {checkpoint})"
    try:
        sidecar = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"{json_path} is not readable JSON: {err}"
    required = ("format", "onnx_sha256", "checkpoint_sha256", "input", "outputs", "classes", "preprocess",
                "calibration", "meta", "head")
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT or any(k not in sidecar for k in required):
        return None, f"{json_path} is not a SpotCheck ONNX sidecar (expected format {SIDECAR_FORMAT!r})"
    if gaps := served_gaps(sidecar):
        return None, f"{json_path} lacks {gaps}: it was not written by model.export"
    try:
        graph = onnx_path.read_bytes()
    except OSError as err:
        return None, f"{onnx_path} cannot be read: {err}"
    if hashlib.sha256(graph).hexdigest() != sidecar["onnx_sha256"]:
        return None, f"{onnx_path} does not match its checksum in {json_path.name}: the file is damaged or was changed"
    if checkpoint.suffix not in EXPORT_SUFFIXES and checkpoint.is_file() \
            and sha256_of(checkpoint) != sidecar["checkpoint_sha256"]:
        return None, (f"{onnx_path.name} was exported from another version of {checkpoint.name} "
                      f"(re-run: python -m model.export --checkpoint {checkpoint})")
    return _Export(graph, sidecar), None


def choose_backend(checkpoint: str | os.PathLike | None = None) -> str:
    """What backend="auto" runs: ONNX Runtime when its export is usable and it is installed, else PyTorch.

    An export that is there but unusable (damaged, or from another version of the checkpoint) is a warning:
    falling back silently could leave someone believing a model is served that is not.
    """
    return _choose_backend(checkpoint)[0]


def _choose_backend(checkpoint: str | os.PathLike | None) -> tuple[str, _Export | None]:
    """`choose_backend`'s answer, with the export it read when that is "onnx" (so the Predictor reads it once)."""
    if importlib.util.find_spec("onnxruntime") is not None:  # the faster one here (bench/results.md)
        export, problem = _read_export(checkpoint)
        if problem is None:
            return "onnx", export
        if any(p.exists() for p in onnx_paths(checkpoint_path(checkpoint))):
            warnings.warn(f"running the network in PyTorch instead of ONNX Runtime: {problem}", stacklevel=3)
    return "torch", None


class Predictor:
    def __init__(self, checkpoint: str | os.PathLike | None = None, *, backend: str = "auto",
                 threads: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        path = checkpoint_path(checkpoint)
        export = None
        if backend == "auto":
            backend, export = _choose_backend(path)
        if backend == "onnx":
            if export is None:
                export, problem = _read_export(path)
                if problem:
                    raise CheckpointError(problem)
            info = export.sidecar
            self._engine = _OnnxEngine(export, threads)
            self.checkpoint_sha256 = str(info["checkpoint_sha256"])
        else:
            pt = path.with_suffix(".pt") if path.suffix in EXPORT_SUFFIXES else path
            info, self.checkpoint_sha256 = read_checkpoint(pt)  # which model answered: batch scoring records it
            self._engine = _TorchEngine(info, threads)
        self.backend = backend
        self.classes = tuple(info["classes"])
        self.settings = EvalSettings.from_checkpoint(info["preprocess"])  # how it was trained to see photos
        self.calibration = Calibration.from_dict(info["calibration"])
        # Checkpoints without it (e.g. ones tests make) skip the out-of-distribution check.
        self.feature_distance = FeatureDistance.from_dict(info["ood"]) if info.get("ood") else None
        self.ood_layer = ood_layer_of(info)  # where the distance is measured
        self.meta = info["meta"]

    def prepare(self, image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> Prepared:
        """Check, frame (or crop to `box`) and preprocess one RGB uint8 image. A photo over WORKING_SIDE is
        checked as its `working_copy`; `box` and the framing's box are in `image`'s own pixels all the same."""
        check_rgb8(image)
        working = working_copy(image)
        sx, sy = working.shape[1] / image.shape[1], working.shape[0] / image.shape[0]
        if box is not None:
            box = _scaled(box, sx, sy)
        analysis = analysis_copy(working)  # one downscaled copy for both the framing and the quality checks
        x, square, framing = eval_preset(working, self.settings, box=box, analysis=analysis)
        if working is not image:
            framing = replace(framing, box=_scaled(framing.box, 1 / sx, 1 / sy))
        return Prepared(x, square, framing, photo_problem(working, analysis))

    def network(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw logits, the last feature maps and the out-of-distribution features for a batch of eval-preset
        inputs, (N, 3, size, size) float32."""
        return self._engine.run(inputs)

    def classify(self, batch: list[Prepared]) -> list[Prediction]:
        if not batch:
            return []
        logits, maps, ood_features = self.network(np.stack([p.input for p in batch]))
        cal = self.calibration
        probs = softmax(logits, cal.temperature)
        distances = self.feature_distance(ood_features) if self.feature_distance else np.zeros(len(batch))
        weights = self._engine.head_weight
        results = []
        for i, prepared in enumerate(batch):
            top = int(probs[i].argmax())
            label, reason = decide(probs[i], float(distances[i]), self.classes, cal, prepared.problem)
            results.append(Prediction(
                label=label,
                reason=reason,
                probabilities={c: float(p) for c, p in zip(self.classes, probs[i])},
                confidence=float(probs[i, top]),
                heatmap=class_activation_map(maps[i], weights[top], self.settings.size),
                square=prepared.square,
                framing=prepared.framing,
                problem=prepared.problem,
                unlike_training=unlike_training(float(distances[i]), cal),
            ))
        return results

    def prepare_files(self, paths: Iterable[Path], *, workers: int = 1, ahead: int = 64
                      ) -> Iterator[tuple[Path, Prepared | str]]:
        """Each file read and prepared, in input order, by `workers` threads with at most `ahead` files in flight;
        a file that cannot be used gives the reason instead (any error: a long run must not stop on one file).
        Stopped early (Ctrl+C, or the caller done), it drops the files not yet started: waiting for all `ahead` of
        them had kept an interrupted run of phone photos going for over a minute."""
        pool = ThreadPoolExecutor(workers)
        try:
            paths = iter(paths)
            inflight = deque((p, pool.submit(self._prepare_file, p)) for p in itertools.islice(paths, ahead))
            while inflight:
                path, future = inflight.popleft()
                following = next(paths, None)
                if following is not None:
                    inflight.append((following, pool.submit(self._prepare_file, following)))
                yield path, future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _prepare_file(self, path: Path) -> Prepared | str:
        try:
            return self.prepare(read_image(path))
        except ImageError as err:
            return str(err)
        except Exception as err:
            return f"unexpected error: {type(err).__name__}: {err}"

    def predict_files(self, paths: Iterable[Path], *, batch_size: int = 32, workers: int = 1
                      ) -> Iterator[tuple[Path, Prediction | str]]:
        """`prepare_files`, with the network run on batches of `batch_size` usable photos: each file's prediction,
        or the reason it cannot be used, in input order."""
        pending: list[tuple[Path, Prepared | str]] = []

        def answered() -> Iterator[tuple[Path, Prediction | str]]:
            predictions = iter(self.classify([item for _, item in pending if isinstance(item, Prepared)]))
            for path, item in pending:
                yield path, item if isinstance(item, str) else next(predictions)
            pending.clear()

        usable = 0
        for path, item in self.prepare_files(paths, workers=workers, ahead=2 * batch_size):
            pending.append((path, item))
            usable += isinstance(item, Prepared)
            if usable == batch_size:
                yield from answered()
                usable = 0
        yield from answered()

    def predict(self, image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> Prediction:
        """Predict one RGB uint8 image; `box` (x0, y0, x1, y1) replaces the automatic framing."""
        return self.classify([self.prepare(image, box)])[0]

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """Predict one image file; raises data.images.ImageError for unusable files."""
        return self.predict(read_image(Path(path)))


def _scaled(box: tuple[int, int, int, int], sx: float, sy: float) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)


def check_rgb8(image: object) -> None:
    """Refuse, with a message that says what to do, an array that is not an (H, W, 3) uint8 RGB photo.

    Files never need it (`data.images.read_image` converts grayscale, RGBA and 16-bit); arrays handed to
    `predict` by other code do: a float or 16-bit array would otherwise be misread, not refused.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"expected an RGB uint8 array of shape (height, width, 3), got a {got}; read files with "
                         "data.images.read_image, which converts grayscale, RGBA and 16-bit images")
    if min(image.shape[:2]) < 1:
        raise ImageError(f"the image is empty (shape {image.shape})")


def class_activation_map(maps: np.ndarray, class_weights: np.ndarray, size: int) -> np.ndarray:
    """CAM: the head's weights for a class over the last feature maps, upsampled to the input.

    With global average pooling and one linear layer this equals Grad-CAM for
    that layer, and needs no gradients. Each feature cell is placed where it looks: both networks' convolutions
    (odd kernels, padded by half their width; stride 1 or 2) centre cell j on input pixel j x stride, so the
    cells of a 4 x 4 map from a 112-px input sit at pixels 0, 32, 64 and 96. A plain resize would spread them
    evenly (at 13.5 ... 97.5) and draw the heatmap up to 18 px too far right and down; against occlusion sensitivity (bench/README.md, "Does it look at
    the lesion?") the placed map correlates better (r 0.45 against 0.36).
    """
    cam = np.fmax(np.tensordot(class_weights, maps, axes=1), 0).astype(np.float32)  # fmax: NaN (a broken model) -> 0
    stride = feature_stride(size, cam.shape[0])
    placed = np.float32([[stride, 0, 0], [0, stride, 0]])  # cell (i, j) -> pixel (stride * i, stride * j)
    cam = cv2.warpAffine(cam, placed, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    cam = np.clip(cam, 0, None)
    return cam / cam.max() if cam.max() > 0 else cam


def feature_stride(size: int, cells: int) -> int:
    """Input pixels per feature cell: each stride-2 layer halves the side, rounding up, until `cells` are left."""
    stride = 1
    while -(-size // stride) > cells:
        stride *= 2
    return stride


def overlay_heatmap(square: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The framed spot with the heatmap blended over it (RGB uint8)."""
    colour = cv2.applyColorMap((heatmap * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(square, 1 - alpha, colour, alpha, 0)


HEATMAP_GAP = 4  # white pixels between the framed spot and its heatmap in `heatmap_beside`


def heatmap_beside(square: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The framed spot as it was checked, and on its right the same with the heatmap over it (RGB uint8): the
    colours cover the very spot they point at, so the spot is shown uncovered beside them (the web page's and batch
    scoring's heatmap)."""
    gap = np.full((square.shape[0], HEATMAP_GAP, 3), 255, np.uint8)
    return np.concatenate([square, gap, overlay_heatmap(square, heatmap)], axis=1)
