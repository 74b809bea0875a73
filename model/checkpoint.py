"""The checkpoint file: weights plus everything needed to use them the same way everywhere.

A checkpoint is a plain dict saved with `torch.save` and loaded with
`weights_only=True` (tensors, numbers, strings, lists and dicts only: no
pickled code is ever executed). A `.sha256` file beside it lets loading refuse
a truncated or tampered file. Writes are atomic: a crash mid-save leaves the
previous file intact. torch is imported only to save or load a checkpoint, so
the ONNX Runtime path (see model.export) can use this module without it.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from torch import nn

FORMAT = "spotcheck/1"
DEFAULT_CHECKPOINT = Path(__file__).with_name("weights") / "spotcheck.pt"
REQUIRED = ("format", "model", "classes", "preprocess", "calibration", "meta")
# What a finished model must hold to be served: the eval preset's settings and the decision rule's.
SERVED = {"preprocess": ("size", "mean", "std"), "calibration": ("temperature", "unsure_below", "vascular_min")}


def checkpoint_path(path: str | os.PathLike | None) -> Path:
    """`path`, or the embedded default model's when None."""
    return Path(path) if path is not None else DEFAULT_CHECKPOINT


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, tampered with or not SpotCheck's."""


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `write(file)` into a temporary file beside it, then rename: a crash never leaves half a
    file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Atomically write the checkpoint and its `.sha256` file. The old checksum goes first: stopped between the two
    files, a checkpoint is left without one (loading then checks its zip records' CRCs), never beside its
    predecessor's, which had made a good last.pt look damaged to --resume. The bytes are made in memory, so a full
    disk is an OSError saying so (torch's writer had said "unexpected pos 704 vs 598")."""
    path = Path(path)
    missing = [k for k in REQUIRED if k not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}")
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    checksum = path.with_name(path.name + ".sha256")
    checksum.unlink(missing_ok=True)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    digest = hashlib.sha256(buffer.getbuffer()).hexdigest()
    atomic_write(checksum, lambda f: f.write(f"{digest}  {path.name}\n".encode()))


def ood_layer_of(checkpoint: dict[str, Any]) -> int:
    """The block whose pooled output the checkpoint's out-of-distribution statistics describe (a checkpoint or an
    ONNX sidecar; older ones, and ones without statistics: the last block, -1)."""
    return int((checkpoint.get("ood") or {}).get("layer", -1))


def network_from(checkpoint: dict[str, Any]) -> nn.Module:
    """The checkpoint's network (`arch`, or an ensemble of `members` of them; older checkpoints: one SpotNet) with
    its weights, in float32 and eval mode, its out-of-distribution features taken where the checkpoint's statistics
    were (older ones: the last layer); CheckpointError if they do not fit."""
    from model.net import build

    arch, members = checkpoint.get("arch", "spotnet"), int(checkpoint.get("members", 1))
    try:
        model = build(arch, num_classes=len(checkpoint["classes"]), members=members)
        model.load_state_dict(checkpoint["model"])  # float16 weights are widened to the model's float32
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"the checkpoint's weights do not fit its network ({arch} x {members}): {err}") from err
    layer = ood_layer_of(checkpoint)
    if not -model.blocks <= layer < model.blocks:
        raise CheckpointError(f"the checkpoint's out-of-distribution layer {layer} is not one of its network's "
                              f"{model.blocks} blocks")
    model.ood_layer = layer
    return model.eval()


def load_checkpoint(path: str | Path | None = None, *, finished: bool = True) -> dict[str, Any]:
    """Load and check a checkpoint; the embedded default model when `path` is None.

    `finished`: it must be a model ready to serve (`spotcheck.pt`: preprocessing and calibration filled in),
    not one of training's snapshots (`best.pt`, `last.pt`), which only training itself reads back.
    """
    return read_checkpoint(path, finished=finished)[0]


def read_checkpoint(path: str | Path | None = None, *, finished: bool = True) -> tuple[dict[str, Any], str]:
    """`load_checkpoint`, and the SHA-256 of the very bytes loaded (which model answered: the batch CSV's `model`
    column, an ensemble's members). The file is read once, so the bytes checked are the bytes loaded."""
    path = checkpoint_path(path)
    if path.is_dir():  # e.g. a training run's folder
        raise CheckpointError(f"{path} is a folder: give the model file in it, e.g. {path / 'spotcheck.pt'}")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    checksum = path.with_name(path.name + ".sha256")
    if checksum.is_file():
        expected = (checksum.read_text().split() or [""])[0]
        if digest != expected:
            raise CheckpointError(f"{path} does not match its checksum in {checksum.name}: the file is damaged or was changed")
    import torch

    try:
        if not checksum.is_file():  # no .sha256 beside it: torch's format is a zip, whose records carry CRCs
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                damaged = archive.testzip()
            if damaged:
                raise ValueError(f"the record {damaged} fails its CRC check")
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable SpotCheck checkpoint (corrupt, truncated or unsafe): {err}") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a SpotCheck checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}")
    if finished and not (checkpoint["preprocess"] and checkpoint["calibration"]):
        raise CheckpointError(f"{path} is a training snapshot, not a finished model: use spotcheck.pt from the same "
                              "folder (written, calibrated, when training ends)")
    if finished and (gaps := served_gaps(checkpoint)):  # e.g. edited by hand: a missing bar must not quietly
        raise CheckpointError(f"{path} lacks {gaps}: it was not written by training.train")  # become a default one
    return checkpoint, digest


def served_gaps(model: dict[str, Any]) -> str:
    """The settings in SERVED that a finished model (a checkpoint, or its ONNX sidecar) lacks, named; "" if none."""
    return ", ".join(f"{part}.{key}" for part, keys in SERVED.items() for key in keys
                     if not isinstance(model.get(part), dict) or key not in model[part])
