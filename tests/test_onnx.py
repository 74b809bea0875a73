"""The ONNX export: same answers as PyTorch, no torch needed to use it, stale or damaged exports noticed."""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import model.export
from model.checkpoint import DEFAULT_CHECKPOINT, FORMAT, CheckpointError, save_checkpoint
from model.export import OPSETS, export, main as export_main, onnx_paths
from model.net import LiteNet, SpotNet, count_parameters
from model.predictor import Predictor, choose_backend, onnx_problem
from tests.conftest import spot_photo

ROOT = Path(__file__).resolve().parents[1]


def random_checkpoint(seed: int = 0) -> dict:
    """A tiny SpotNet with random weights and batch-norm statistics (not the identity a fresh one has)."""
    torch.manual_seed(seed)
    net = SpotNet()
    state = net.state_dict()
    for name, value in state.items():
        if name.endswith("running_mean") or name.endswith(".bias"):
            value.copy_(torch.randn_like(value) * 0.1)
        elif name.endswith("running_var"):
            value.copy_(torch.rand_like(value) + 0.5)
        elif name.endswith(".weight") and value.ndim == 1:
            value.copy_(torch.rand_like(value) + 0.5)
    return {"format": FORMAT, "model": state, "classes": ["vascular", "nevus", "other"],
            "preprocess": {"size": 64, "mean": [0.5] * 3, "std": [0.25] * 3},
            "calibration": {"temperature": 1.5, "unsure_below": 0.5, "vascular_min": 0.9, "ood_distance_max": 5.0},
            "ood": {"means": torch.randn(6, 256), "whitening": torch.eye(256) * torch.rand(256)},
            "meta": {"split_seed": 0, "train_minutes": 0.1}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "m.pt"
    save_checkpoint(path, random_checkpoint())
    export(path)
    return path


def photos() -> list[np.ndarray]:
    return [spot_photo("vascular", size=160, seed=1), spot_photo("nevus", size=240, radius=40, seed=2),
            spot_photo("other", size=120, radius=12, centre=(40, 70), seed=3),
            np.full((90, 150, 3), 255, np.uint8)]  # overexposed: unsure whatever the network says


def test_export_writes_the_graph_and_the_sidecar(exported):
    import onnxruntime as ort

    onnx_path, json_path = onnx_paths(exported)
    assert onnx_path.name == "m.onnx" and json_path.name == "m.json"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "maps", "ood_features"]
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # dynamic batch axis
    logits, maps, ood_features = session.run(None, {"input": np.zeros((5, 3, 64, 64), np.float32)})
    assert logits.shape == (5, 3) and maps.shape == (5, 256, 2, 2)
    assert np.allclose(ood_features, maps.mean(axis=(2, 3)), atol=1e-5)  # SpotNet: the last block's features
    assert onnx_problem(exported) is None and choose_backend(exported) == "onnx"


@pytest.mark.parametrize("opset", [OPSETS[0], OPSETS[-1]])
def test_the_export_writes_every_opset_it_offers(tmp_path, opset):
    """--opset is refused outside OPSETS (7 and 99 had failed with tracebacks): both ends must export and agree."""
    path = tmp_path / "m.pt"
    save_checkpoint(path, random_checkpoint())
    assert export_main(["--checkpoint", str(path), "--opset", str(opset)]) == 0  # it checks ONNX against torch
    assert json.loads(onnx_paths(path)[1].read_text())["opset"] == opset


@pytest.mark.parametrize("opset", [OPSETS[0] - 1, OPSETS[-1] + 1])
def test_an_opset_the_exporter_cannot_write_is_refused_with_the_range(opset, capsys):
    with pytest.raises(SystemExit) as stop:
        export_main(["--opset", str(opset)])
    assert stop.value.code == 2
    assert f"--opset: must be from {OPSETS[0]} to {OPSETS[-1]}, not {opset}" in capsys.readouterr().err


def test_a_full_disk_is_a_message_and_leaves_the_earlier_export(exported, monkeypatch, capsys):
    before = onnx_paths(exported)[0].read_bytes()

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model.export, "atomic_write", full_disk)
    assert export_main(["--checkpoint", str(exported)]) == 1  # had been a traceback
    assert f"error: cannot export {exported}: No space left on device" in capsys.readouterr().err
    assert onnx_paths(exported)[0].read_bytes() == before


def test_a_score_with_nothing_to_score_is_exported_as_null(tmp_path):
    """A model trained on photos without one class (say, no clinical vascular spot in validation) has NaN recalls in
    its metadata; the export must still be written, as strict JSON, rather than fail after all the training."""
    checkpoint = random_checkpoint()
    checkpoint["meta"]["validation"] = {"score": 0.5, "clinical_vascular_recall": float("nan")}
    path = tmp_path / "m.pt"
    save_checkpoint(path, checkpoint)
    _, json_path = export(path)
    validation = json.loads(json_path.read_text())["meta"]["validation"]
    assert validation == {"score": 0.5, "clinical_vascular_recall": None}


def test_an_onnx_model_given_to_export_is_named_as_one_with_the_checkpoint_to_give(exported, tmp_path, capsys):
    """Batch scoring and evaluation take the ONNX file for its checkpoint; the export had called it "not a readable
    SpotCheck checkpoint" (a zip error), as if it were damaged."""
    onnx_path, json_path = onnx_paths(exported)
    assert export_main(["--checkpoint", str(onnx_path)]) == 2
    error = capsys.readouterr().err
    assert f"{onnx_path} is an ONNX model, exported already, not a checkpoint" in error
    assert f"give the .pt checkpoint it was exported from (beside it: {exported})" in error
    alone = tmp_path / "alone.onnx"  # copied without its checkpoint
    shutil.copy(onnx_path, alone)
    shutil.copy(json_path, alone.with_suffix(".json"))
    assert export_main(["--checkpoint", str(alone)]) == 2
    assert "(there is no alone.pt beside it)" in capsys.readouterr().err
    assert export_main(["--checkpoint", str(json_path)]) == 2  # the sidecar names the export as well
    assert f"{json_path} is the sidecar of an ONNX model, exported already" in capsys.readouterr().err
    assert onnx_problem(exported) is None  # left as it was


def test_torch_and_onnx_agree(exported):
    by_torch, by_onnx = Predictor(exported, backend="torch"), Predictor(exported, backend="onnx")
    assert (by_torch.backend, by_onnx.backend) == ("torch", "onnx")
    assert by_onnx.classes == by_torch.classes and by_onnx.calibration == by_torch.calibration
    assert by_onnx.meta == by_torch.meta and by_onnx.settings == by_torch.settings and by_onnx.settings.size == 64
    for part in ("means", "whitening"):  # the out-of-distribution statistics travel in the sidecar
        assert np.array_equal(getattr(by_onnx.feature_distance, part), getattr(by_torch.feature_distance, part))
    prepared = [by_torch.prepare(image) for image in photos()]
    for batch in (prepared, prepared[:1]):  # a whole batch and a single image
        for t, o in zip(by_torch.classify(batch), by_onnx.classify(batch)):
            assert (t.label, t.reason) == (o.label, o.reason)
            assert max(abs(t.probabilities[c] - o.probabilities[c]) for c in t.probabilities) < 1e-4
            assert abs(t.confidence - o.confidence) < 1e-4
            assert t.heatmap.shape == o.heatmap.shape == (64, 64)
            assert np.abs(t.heatmap - o.heatmap).max() < 1e-4
    assert by_onnx.classify([]) == []


def test_onnx_backend_never_imports_torch(exported):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from model.predictor import Predictor
        import serve.batch
        predictor = Predictor({str(exported)!r}, backend="onnx")
        assert Predictor({str(exported)!r}).backend == "onnx"  # auto
        result = predictor.predict(np.full((80, 80, 3), 128, np.uint8))
        assert abs(sum(result.probabilities.values()) - 1) < 1e-5
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_stale_or_damaged_exports_are_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, random_checkpoint(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no export at all is no reason to warn
        assert choose_backend(path) == "torch" and Predictor(path).backend == "torch"
    with pytest.raises(CheckpointError, match="no ONNX export"):
        Predictor(path, backend="onnx")
    export(path)
    assert Predictor(path).backend == "onnx"
    save_checkpoint(path, random_checkpoint(2))  # retrained, not re-exported
    with pytest.warns(UserWarning, match="PyTorch instead of ONNX Runtime.*re-run"):  # never silently
        assert Predictor(path).backend == "torch"
    with pytest.raises(CheckpointError, match="re-run"):
        Predictor(path, backend="onnx")
    export(path)
    onnx_path = onnx_paths(path)[0]
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        Predictor(path, backend="onnx")
    export(path)
    json_path = onnx_paths(path)[1]
    sidecar = json.loads(json_path.read_text())
    del sidecar["calibration"]["vascular_min"]  # edited by hand: a missing bar had crashed (KeyError) on loading
    json_path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="lacks calibration.vascular_min"):
        Predictor(path, backend="onnx")
    with pytest.warns(UserWarning, match="PyTorch instead of ONNX Runtime.*lacks"):
        assert Predictor(path).backend == "torch"
    with pytest.raises(ValueError, match="backend"):
        Predictor(path, backend="tensorrt")


@pytest.mark.skipif(not onnx_paths(DEFAULT_CHECKPOINT)[0].is_file(), reason="the shipped model has no ONNX export")
def test_shipped_export_matches_the_shipped_checkpoint():
    problem = onnx_problem(DEFAULT_CHECKPOINT)
    assert problem is None, f"{problem}: re-export with `python -m model.export` after replacing the shipped model"


def test_float16_weights_make_half_the_file_and_the_same_answers(tmp_path):
    """The shipped LiteNet stores float16 weights: the export keeps them in float16 too (half of float32), and ONNX
    Runtime, widening them back, answers as PyTorch does."""
    checkpoint = random_checkpoint()
    net = LiteNet()
    checkpoint["model"] = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    checkpoint["arch"] = "lite0"
    checkpoint["ood"] = {"means": torch.randn(6, 112), "whitening": torch.eye(112), "layer": LiteNet.ood_layer}
    save_checkpoint(tmp_path / "lite.pt", checkpoint)
    onnx_path, json_path = export(tmp_path / "lite.pt")  # checked against PyTorch before it is written
    weights = 2 * count_parameters(net)
    assert weights < onnx_path.stat().st_size < 1.1 * weights
    assert json.loads(json_path.read_text())["arch"] == "lite0"
    image = spot_photo("vascular", size=160, seed=1)
    by_torch = Predictor(tmp_path / "lite.pt", backend="torch").predict(image)
    by_onnx = Predictor(tmp_path / "lite.pt", backend="onnx").predict(image)
    assert by_torch.label == by_onnx.label
    for name, p in by_torch.probabilities.items():
        assert abs(p - by_onnx.probabilities[name]) < 1e-5
    x = Predictor(tmp_path / "lite.pt", backend="torch").prepare(image).input[None]
    torch_features = Predictor(tmp_path / "lite.pt", backend="torch").network(x)[2]
    onnx_features = Predictor(tmp_path / "lite.pt", backend="onnx").network(x)[2]
    assert torch_features.shape == (1, 112) and np.allclose(torch_features, onnx_features, atol=1e-4)


def test_exports_from_before_the_ood_output_still_run(exported, tmp_path):
    """Exports written before `ood_features` existed have two outputs; their distance measured the last maps."""
    import onnx

    old = tmp_path / "old.pt"
    shutil.copy(exported, old)
    shutil.copy(exported.with_name(exported.name + ".sha256"), old.with_name("old.pt.sha256"))
    graph = onnx.load(str(onnx_paths(exported)[0]))
    graph.graph.output.pop()  # ood_features
    onnx.save(graph, str(onnx_paths(old)[0]))
    sidecar = json.loads(onnx_paths(exported)[1].read_text())
    sidecar["outputs"] = ["logits", "maps"]
    sidecar["onnx_sha256"] = hashlib.sha256(onnx_paths(old)[0].read_bytes()).hexdigest()
    onnx_paths(old)[1].write_text(json.dumps(sidecar))
    x = Predictor(exported, backend="torch").prepare(photos()[0]).input[None]
    logits, maps, ood_features = Predictor(old, backend="onnx").network(x)
    assert np.array_equal(ood_features, maps.mean(axis=(2, 3)))
    new = Predictor(exported, backend="onnx").network(x)
    assert np.allclose(logits, new[0], atol=1e-6) and np.allclose(ood_features, new[2], atol=1e-5)
