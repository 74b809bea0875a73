"""Shared fixtures: small synthetic photos made by the tests, so no real data is needed."""
from __future__ import annotations

import base64
import contextlib
import csv
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.bench import free_port
from data.datasets import SHARED_DATA
from model.checkpoint import DEFAULT_CHECKPOINT

# The tests' own gradio_client goes through huggingface_hub, which looks up huggingface.co unless told it is
# offline (read when it is imported, so before any test module imports it). The app never does (test_api).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"vascular": (200, 20, 40), "nevus": (90, 55, 35), "other": (60, 60, 90)}  # RGB spot colours


def spot_photo(label: str = "vascular", *, size: int = 160, radius: int = 18, centre=None, seed: int = 0) -> np.ndarray:
    """A skin-toned, slightly textured RGB image with one round spot."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (225, 180, 160)
    noise = rng.normal(0, 6, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    cx, cy = centre or (size // 2, size // 2)
    cv2.circle(image, (cx, cy), radius, COLOURS[label], -1, cv2.LINE_AA)
    return image


def plain_skin(height: int, width: int, colour=(205, 160, 140), spread: float = 4) -> np.ndarray:
    """An RGB uint8 surface of one colour with a little grain (normal noise of `spread` levels), no spot."""
    return np.clip(np.random.default_rng(0).normal(colour, spread, (height, width, 3)), 0, 255).astype(np.uint8)


def side_lit_photo() -> np.ndarray:
    """An 800 x 600 photo lit from the right: the left third falls into shadow; a 20-px red dot at (560, 300)."""
    rng = np.random.default_rng(0)
    image = rng.normal((205, 160, 140), 4, (600, 800, 3))
    light = np.clip(np.linspace(-0.5, 2.5, 800), 0.25, 1.0)  # dark up to x = 200, then full light from x = 300
    image = np.clip(image * light[None, :, None], 0, 255).astype(np.uint8)
    cv2.circle(image, (560, 300), 10, (170, 30, 45), -1, cv2.LINE_AA)
    return image


def shaded_photo() -> np.ndarray:
    """400 x 300 skin lit from the right and darkening smoothly to the left, with a 24-px red spot at (300, 150)."""
    skin = np.clip(np.random.default_rng(0).normal((215, 170, 150), 3, (300, 400, 3)), 0, 255)
    cv2.circle(skin, (300, 150), 12, (185, 40, 55), -1, cv2.LINE_AA)
    light = np.minimum(np.linspace(0.35, 1.05, 400), 1.0)[None, :, None]
    return np.clip(skin * light, 0, 255).astype(np.uint8)


def write_rgb(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


# An iPhone-style HEIC photo, 64 x 48 stored with EXIF orientation 6 and the matching HEIF rotation (irot), as
# iOS writes them: upright it is 48 wide and 64 high, red on top, skin below. Made once with pillow-heif's
# encoder (which SpotCheck does not install: it reads HEIC with the decoder-only pi-heif); 705 bytes.
ROTATED_HEIC = base64.b64decode(
    "AAAAHGZ0eXBoZWljAAAAAG1pZjFoZWljbWlhZgAAAchtZXRhAAAAAAAAACFoZGxyAAAAAAAAAABwaWN0AAAAAAAAAAAAAAAAAAAAADRpbG9jAAAA"
    "AERAAAIAAQAAAAAB7AABAAAAAAAAALEAAgAAAAACnQABAAAAAAAAACQAAAA4aWluZgAAAAAAAgAAABVpbmZlAgAAAAABAABodmMxAAAAABVpbmZl"
    "AgAAAQACAABFeGlmAAAAAA5waXRtAAAAAAABAAABB2lwcnAAAADmaXBjbwAAAHZodmNDAQNwAAAAkAAAAAAAHvAA/P34+AAADwNgAAEAGEABDAH/"
    "/wNwAAADAJAAAAMAAAMAHroCQGEAAQAqQgEBA3AAAAMAkAAAAwAAAwAeoCCBBZbq5Ka5uAhoMCAAAAMDIAAAAwAhYgABAAZEAcFzwIkAAAATY29s"
    "cm5jbHgAAQANAAaAAAAAFGlzcGUAAAAAAAAAQAAAAEAAAAAoY2xhcAAAAEAAAAABAAAAMAAAAAEAAAAAAAAAAv////AAAAACAAAAEHBpeGkAAAAA"
    "AwgICAAAAAlpcm90AwAAABlpcG1hAAAAAAAAAAEAAQaBAgMFhIYAAAAaaXJlZgAAAAAAAAAOY2RzYwACAAEAAQAAAN1tZGF0AAAArSgBrwY4iS58"
    "L/XQT///b0/2X9pqSpnq/zZ5LI825//7TEJv72M5h9EsWC2+Nz9O/1P0H/YsNSj3StnZ0AActFLYZRDovN2c7XUB3AAEzJ74+HB7s/XEOaN2Y5Rx"
    "AAGuBHC9WpGyL55HX5xogAGDmcVmwfZDcJTC8gte8SwjzjxbB0UQVx37BYRB9YDlWCdlWHHLmo+/97Pzn/HGSMnOf8lWnvoXMMVRyO/htLw8AAAA"
    "BkV4aWYAAE1NACoAAAAIAAEBEgADAAAAAQAGAAAAAAAA"
)

HAM_DX = ["nv"] * 40 + ["mel"] * 14 + ["bkl"] * 10 + ["vasc"] * 10 + ["df"] * 6


def make_ham(root):
    """A miniature HAM10000: 80 images of 50 lesions, some lesions with two images (48 px: the smallest photo that
    training and the app take)."""
    rows = []
    for i, dx in enumerate(HAM_DX):
        lesion = f"HAM_{i // 2 if dx == 'nv' else i:07d}"
        rows.append({"lesion_id": lesion, "image_id": f"ISIC_{i:07d}", "dx": dx, "dx_type": "histo",
                     "age": "50", "sex": "male", "localization": "back"})
        write_rgb(root / "images" / f"ISIC_{i:07d}.jpg", spot_photo("nevus", size=48, radius=9, seed=i))
    with (root / "HAM10000_metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_clinical(root: Path) -> Path:
    """A miniature clinical photo set (labels.csv + images/): 10 photos per class, one group each."""
    rows = []
    for label in COLOURS:
        for i in range(10):
            name = f"c_{label}_{i}.jpg"
            write_rgb(root / "images" / name, spot_photo(label, size=96, radius=12 + i % 4, seed=i))
            # DermQuest numbers 10 apart: each photo its own case (numbers 1 or 2 apart would be one case series)
            rows.append([name, label, "sd198_subset", label, f"o/r@1:raw_images/{label}/{100 + 10 * i:06d}HB.jpg"])
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "source", "source_category", "original_path"])
        writer.writerows(rows)
    return root


@pytest.fixture
def class_tree(tmp_path: Path) -> Path:
    """A class-per-folder dataset: 10 small photos per class, varied position and size."""
    root = tmp_path / "tree"
    for label in COLOURS:
        for i in range(10):
            image = spot_photo(label, size=96, radius=10 + i % 5, centre=(40 + i * 2, 44 + i), seed=i)
            write_rgb(root / label / f"{label}_{i}.png", image)
    return root


@pytest.fixture(scope="session")
def predictor():
    from model.predictor import Predictor

    return Predictor(DEFAULT_CHECKPOINT)


needs_shared = pytest.mark.skipif(not (SHARED_DATA / "ham10000" / "HAM10000_metadata.csv").is_file(),
                                  reason=f"real data not found at {SHARED_DATA} (tests on real data skipped)")


@dataclass
class RunningApp:
    url: str  # http://127.0.0.1:PORT/
    process: subprocess.Popen
    uploads: Path  # the app's GRADIO_TEMP_DIR: uploads and Gradio's copies land here
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def serve_app(work: Path, *flags: str, own_upload_folder: bool = False):
    """`python -m serve.app` on a free port in a subprocess, the way a user starts it; stopped on exit (SIGTERM).

    Ready when the app itself says it is running at that port (another server that took the port in between
    would answer too); if it lost the port, it is started again on another. Its uploads land in `work/gradio`;
    with `own_upload_folder`, GRADIO_TEMP_DIR is left unset, as for a user, and the app makes its own folder
    under `work/tmp` (its TMPDIR)."""
    uploads, log = work / "gradio", work / "app.log"
    # Analytics and Hugging Face's telemetry are left to the app to switch off, as for a user who never set them.
    env = {**{k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE",
                                                                "HF_HUB_DISABLE_TELEMETRY", "GRADIO_TEMP_DIR")},
           "GRADIO_TEMP_DIR": str(uploads), "PYTHONUNBUFFERED": "1"}
    if own_upload_folder:
        uploads = work / "tmp"
        uploads.mkdir(exist_ok=True)
        del env["GRADIO_TEMP_DIR"]
        env["TMPDIR"] = str(uploads)
    scheme = "https" if "--ssl-certfile" in flags else "http"
    for attempt in range(3):
        port = free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "serve.app", "--port", str(port), *flags], cwd=ROOT,
                                       env=env, stdout=out, stderr=subprocess.STDOUT)
        app = RunningApp(f"{scheme}://127.0.0.1:{port}/", process, uploads, log)
        try:
            if _wait_until_running(app):
                yield app
                return
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    pytest.fail(f"the app could not get a free port in 3 tries:\n{app.log_tail()}")


def _wait_until_running(app: RunningApp) -> bool:
    """True once the app says it runs at its URL and answers there; False if it lost its port to another program."""
    unverified = ssl._create_unverified_context()  # a test certificate: only whether the server is up matters here
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=unverified))
    deadline = time.monotonic() + 120
    while True:
        said = f"SpotCheck is running at {app.url}" in app.log_tail(100_000)
        if app.process.poll() is not None:
            if "Cannot find empty port" in app.log_tail():
                return False
            pytest.fail(f"the app exited with status {app.process.returncode}:\n{app.log_tail()}")
        if said:
            try:
                with no_proxy.open(app.url, timeout=2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"the app did not answer at {app.url} within 120 s:\n{app.log_tail()}")
        time.sleep(0.25)


@pytest.fixture(scope="session")
def running_app(tmp_path_factory) -> RunningApp:
    """The app as a user starts it, session-scoped so the browser and API tests share one server (~10 s to start)."""
    with serve_app(tmp_path_factory.mktemp("app")) as app:
        yield app
