"""Checkpoints round-trip, and damaged or foreign files are refused with a clear error."""
from __future__ import annotations

import errno
import io

import pytest
import torch

import model.checkpoint
from model.checkpoint import (FORMAT, CheckpointError, load_checkpoint, network_from, read_checkpoint,
                              save_checkpoint, sha256_of)
from model.net import SpotNet
from model.predictor import Predictor


def tiny_checkpoint() -> dict:
    return {"format": FORMAT, "model": SpotNet().state_dict(), "classes": ["vascular", "nevus", "other"],
            "preprocess": {"size": 64, "mean": [0.5] * 3, "std": [0.25] * 3},
            "calibration": {"temperature": 1.5, "unsure_below": 0.5, "vascular_min": 0.9, "ood_distance_max": 0.0},
            "meta": {"split_seed": 0}}


def test_round_trip_and_checksum_file(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_checkpoint())
    assert (tmp_path / "m.pt.sha256").read_text().split()[1] == "m.pt"
    loaded = load_checkpoint(path)
    assert loaded["calibration"]["temperature"] == 1.5
    assert Predictor(path).calibration.temperature == 1.5


def test_a_save_stopped_before_its_checksum_leaves_a_checkpoint_that_loads(tmp_path, monkeypatch):
    """Training saves last.pt every epoch: stopped between the checkpoint and its .sha256, the new last.pt had sat
    beside the previous epoch's checksum, and --resume refused it as damaged."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, tiny_checkpoint())
    write = model.checkpoint.atomic_write

    def stopped_at_the_checksum(target, content):
        if target.suffix == ".sha256":
            raise KeyboardInterrupt
        write(target, content)

    monkeypatch.setattr(model.checkpoint, "atomic_write", stopped_at_the_checksum)
    newer = tiny_checkpoint() | {"meta": {"split_seed": 1}}
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, newer)
    assert load_checkpoint(path)["meta"]["split_seed"] == 1


class AlmostFullDisk(io.RawIOBase):
    """A file on a disk with `room` bytes left: a write that does not fit fails with ENOSPC, as the OS's does."""

    def __init__(self, room: int):
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return len(data)


def test_a_full_disk_is_an_os_error_that_says_so(tmp_path, monkeypatch):
    """torch's zip writer had turned it into "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected
    pos 704 vs 598", which training could not tell from a bug."""
    def full_disk(target, content):
        with io.BufferedWriter(AlmostFullDisk(room=100_000)) as file:
            content(file)

    monkeypatch.setattr(model.checkpoint, "atomic_write", full_disk)
    checkpoint = tiny_checkpoint()
    checkpoint["meta"]["padding"] = torch.zeros(2_000_000)  # megabytes, as a real one
    with pytest.raises(OSError) as err:
        save_checkpoint(tmp_path / "m.pt", checkpoint)
    assert err.value.errno == errno.ENOSPC


def test_the_file_is_read_once_so_the_bytes_checked_are_the_bytes_loaded(tmp_path, monkeypatch):
    """The .sha256 check and torch.load see one read of the file, and the digest returned (which model answered:
    the batch CSV's `model` column) is of those bytes, so a file replaced in between cannot slip through."""
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_checkpoint())
    reads = []
    read_bytes = type(path).read_bytes
    monkeypatch.setattr(type(path), "read_bytes", lambda self: reads.append(self) or read_bytes(self))
    loads = []
    torch_load = torch.load
    monkeypatch.setattr(torch, "load", lambda source, **kw: loads.append(source) or torch_load(source, **kw))
    checkpoint, digest = read_checkpoint(path)
    assert reads == [path] and len(loads) == 1 and not isinstance(loads[0], (str, type(path)))
    assert digest == sha256_of(path) and checkpoint["calibration"]["temperature"] == 1.5
    assert Predictor(path, backend="torch").checkpoint_sha256 == digest


def test_tampered_checkpoint_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_checkpoint())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_truncated_checkpoint_without_checksum_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_checkpoint())
    (tmp_path / "m.pt.sha256").unlink()
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": print}, path)  # a callable: weights_only refuses it
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_foreign_or_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a SpotCheck checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_wrong_architecture_is_a_checkpoint_error(tmp_path):
    bad = tiny_checkpoint()
    bad["model"] = {"head.weight": torch.zeros(3, 7)}
    save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        Predictor(tmp_path / "bad.pt")


def test_the_out_of_distribution_layer_comes_from_the_checkpoint(tmp_path):
    checkpoint = tiny_checkpoint()
    assert network_from(checkpoint).ood_layer == -1  # older checkpoints: the last block
    checkpoint["ood"] = {"means": torch.zeros(6, 96), "whitening": torch.eye(96), "layer": 4}
    net = network_from(checkpoint)
    assert net.ood_layer == 4 and net.forward_with_maps(torch.zeros(1, 3, 64, 64))[2].shape == (1, 96)
    checkpoint["ood"]["layer"] = 8  # SpotNet has 8 blocks, 0-7
    with pytest.raises(CheckpointError, match="layer 8 is not one of"):
        network_from(checkpoint)


def test_a_training_snapshot_is_refused_with_a_pointer_to_the_finished_model(tmp_path):
    snapshot = tiny_checkpoint() | {"preprocess": {}, "calibration": {}}  # what training writes to best.pt / last.pt
    save_checkpoint(tmp_path / "best.pt", snapshot)
    with pytest.raises(CheckpointError, match="training snapshot.*use spotcheck.pt"):
        Predictor(tmp_path / "best.pt", backend="torch")
    assert load_checkpoint(tmp_path / "best.pt", finished=False)["model"]  # training reads it back


@pytest.mark.parametrize("part, key", [("calibration", "vascular_min"), ("preprocess", "mean")])
def test_a_finished_model_missing_a_setting_is_refused_not_filled_in(tmp_path, part, key):
    checkpoint = tiny_checkpoint()
    del checkpoint[part][key]
    save_checkpoint(tmp_path / "m.pt", checkpoint)
    with pytest.raises(CheckpointError, match=f"lacks {part}.{key}"):
        Predictor(tmp_path / "m.pt", backend="torch")


def test_a_damaged_checkpoint_without_its_checksum_file_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_checkpoint())
    (tmp_path / "m.pt.sha256").unlink()  # copied without it
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(path)


def test_a_run_folder_given_for_the_checkpoint_names_the_file_to_give(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match=r"is a folder: give the model file in it, e.g. .*run/spotcheck.pt"):
        Predictor(tmp_path / "run")
