"""Training, resuming and evaluating end to end on a tiny class-per-folder dataset."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import data.datasets as datasets_module
import data.presets as presets
import data.splits as splits_module
import training.runs as runs
import training.train as train
from data.datasets import Sample, load_dataset
from data.flags import UsageError
from data.identity import seen_keys
from data.images import read_image
from model.checkpoint import load_checkpoint, save_checkpoint, sha256_of
from model.export import export
from model.net import LiteNet, build
from model.predictor import Predictor
from tests.conftest import HAM_DX, ROOT, make_clinical, make_ham, shaded_photo, spot_photo, write_rgb
from training import evaluate
from training.loaders import sampling_weights
from training.report import write_model_card

TINY = ["--epochs", "2", "--draws-per-epoch", "48", "--batch-size", "16", "--image-size", "48", "--workers", "0"]
FAST = [*TINY, "--arch", "spotnet"]  # the training machinery is the same for both networks; SpotNet is 4x quicker


def interrupted_in_second_epoch(monkeypatch, out: Path, flags: list[str]) -> None:
    """Train with `flags` into `out`, stopped as Ctrl+C would stop it during its second epoch (the first saved)."""
    real_scores = train.validation_scores

    def stop_once_an_epoch_is_saved(*args, **kwargs):
        if (out / "last.pt").exists():
            raise KeyboardInterrupt
        return real_scores(*args, **kwargs)

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(train, "validation_scores", stop_once_an_epoch_is_saved)
        train.main([*flags, "--out", str(out)])


def refused(capsys, argv: list[str], message: str) -> None:
    """Evaluation refuses the command line `argv`: exit status 2, as for a bad flag, and `message` (a regular
    expression) on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        evaluate.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and re.search(message, err), err


def as_shipped(state: dict) -> dict:
    """A training state dict as the finished checkpoint stores it: float weights in float16."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def test_train_writes_a_complete_calibrated_checkpoint(class_tree, tmp_path, monkeypatch):
    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *TINY])  # the default network
    ckpt = load_checkpoint(final)
    assert ckpt["classes"] == ["vascular", "nevus", "other"]
    assert ckpt["preprocess"]["size"] == 48 and ckpt["preprocess"]["colour_constancy"] == 0
    assert set(ckpt["calibration"]) == {"temperature", "vascular_min", "unsure_below", "ood_distance_max"}
    assert ckpt["arch"] == "lite0"
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    # 3 classes x 1 domain; LiteNet's middle features (the end of stage 5: 112 channels), all of them
    assert ckpt["ood"]["layer"] == 11 and ckpt["ood"]["means"].shape == (3, 112)
    assert ckpt["ood"]["whitening"].shape[0] == 112 and ckpt["ood"]["whitening"].shape[1] <= 112  # n images: n ranks
    assert ckpt["calibration"]["vascular_min"] >= 0.5
    assert ckpt["meta"]["split_seed"] == 0 and ckpt["meta"]["best_epoch"] == 1  # --keep last: the last epoch
    assert ckpt["meta"]["device"] == "cpu"  # the default, where every published figure was measured
    safety = ckpt["meta"]["validation_safety"]["dermoscopy"]  # a class tree has no melanomas
    assert safety["melanoma"] == {"images": 0, "over_bar": 0} and 0 < safety["vascular"]["images"]
    assert final.stat().st_size < 2.2 * ckpt["meta"]["parameters"]  # 2 bytes a weight
    assert final.with_suffix(".onnx").stat().st_size < 2.2 * ckpt["meta"]["parameters"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 2 and {"score", "raw_score"} <= history[0].keys()  # averaged and raw weights both scored
    assert Predictor(final, backend="onnx").backend == "onnx"  # the export is written and matches
    prediction = Predictor(final).predict_file(next(class_tree.rglob("*.png")))
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-5

    metrics = evaluate.main(["--checkpoint", str(final), "--data", str(class_tree), "--out", str(tmp_path / "eval")])
    report = metrics["domains"]["dermoscopy"]
    assert report["images"] == sum(report["class_counts"].values()) > 0
    for name in ("metrics.json", "MODEL_CARD.md", "confusion_dermoscopy.png", "reliability_dermoscopy.png",
                 "roc_dermoscopy.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    # An evaluation stopped before its figures are worked out leaves the report it found whole (it had deleted the
    # pictures and kept the metrics.json and card: the shipped model's committed report among them).
    found = {path.name: path.read_bytes() for path in (tmp_path / "eval").iterdir()}

    def ctrl_c(*args):  # while the intervals are drawn
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(evaluate, "bootstrap_intervals", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            evaluate.main(["--checkpoint", str(final), "--data", str(class_tree), "--out", str(tmp_path / "eval")])
    assert {path.name: path.read_bytes() for path in (tmp_path / "eval").iterdir()} == found
    card = (tmp_path / "eval" / "MODEL_CARD.md").read_text()
    assert "no marks were drawn in training" in card and "were made to look like" in card  # the defaults
    assert "surround of skin" not in card
    assert "The figures are one training run's" in card
    assert " min on a CPU with " in card and "seven diagnoses was measured on validation\nand did not help" in card
    assert metrics["ood"] == {"layer": 11, "features": 112}
    safety = card.split("Validation images at or over the vascular bar (dermoscopy: ")[1].split("\n")[0]
    assert "vascular" in safety and "melanoma" not in safety  # a class tree has no diagnoses: no "0 of 0 melanoma"
    assert "distance of the 112 pooled features after layer 11 to the nearest training group" in card
    assert "Class-per-folder images" in card and "Tschandl" not in card  # its own data, not the shipped model's
    kinds = report["with_decision_rule"]["answers_by_lesion_kind"]  # class folders name no diagnosis: the class
    assert list(kinds) == ["vascular"] and kinds["vascular"]["images"] == report["class_counts"]["vascular"]
    assert f"| dermoscopy | vascular | {kinds['vascular']['images']} | {kinds['vascular']['vascular']} |" in card
    vascular = sum(counts["vascular"] for counts in ckpt["meta"]["split_counts"].values())
    assert f"({vascular} vascular images in all)" in card and str(class_tree) in card
    recipe = {**ckpt["meta"], "device": "NVIDIA H100 80GB HBM3",
              "flags": {**ckpt["meta"]["flags"], "marks_p": 0.5, "zoom_out_p": 0.3, "dx_weight": 0.5}}
    write_model_card(recipe, metrics, tmp_path / "card.md")  # the card names the recipe's augmentations
    card = (tmp_path / "card.md").read_text()
    assert " min on a GPU (NVIDIA H100 80GB HBM3)" in card and " min on a CPU" not in card
    assert "helped during training by an auxiliary head" in card and "`--dx-weight 0.5`" in card
    assert "drawn on 50% of the clinical training" in card
    assert "30% of the dermoscopic draws were shrunk onto a wider surround of skin" in card
    # A user's own phone photos (labels.csv, source "myphone") are not credited to the project's sources.
    own = {**ckpt["meta"], "sources": ["clinical"], "clinical_sources": ["myphone"]}
    write_model_card(own, metrics, tmp_path / "own.md")
    card = (tmp_path / "own.md").read_text()
    assert "Photos from `myphone`: where they come from and under what licence is for whoever trained" in card
    assert "Tucker" not in card and "Sun X" not in card and "non-commercial" not in card
    project = {**ckpt["meta"], "sources": ["clinical"], "clinical_sources": ["pad_ufes_20", "sd198_subset"]}
    write_model_card(project, metrics, tmp_path / "project.md")
    card = (tmp_path / "project.md").read_text()
    assert "PAD-UFES-20" in card and "Sun X" in card and "Tucker" not in card and "non-commercial" in card


def test_out_of_distribution_statistics_are_fitted_on_photos_prepared_as_prediction_prepares_them(class_tree,
                                                                                                  tmp_path):
    """The feature distance's group means are those of the training photos as the served model sees them (training
    decodes its own copy larger, for random crops: resizing that copy again is not what prediction does)."""
    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST, "--image-size", "40"])
    ckpt = load_checkpoint(final)
    predictor = Predictor(final, backend="torch")
    samples = splits_module.model_splits(ckpt["meta"], [str(class_tree)])["train"]
    inputs = np.stack([predictor.prepare(read_image(s.path)).input for s in samples])
    features = predictor.network(inputs)[2]
    groups = np.array([f"{s.domain} {s.label}" for s in samples])
    means = np.stack([features[groups == g].mean(axis=0) for g in np.unique(groups)])
    # Features of a barely trained network are small (~0.005): resizing the training copy again moved these means
    # by 2e-5; the photos prepared as served give them exactly.
    np.testing.assert_allclose(ckpt["ood"]["means"].numpy(), means, rtol=0, atol=1e-3 * np.abs(means).mean())


def test_evaluate_scores_the_data_the_model_was_trained_on_by_default(class_tree, tmp_path, capsys, monkeypatch):
    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST])
    explicit = evaluate.main(["--checkpoint", str(final), "--data", str(class_tree), "--out", str(tmp_path / "a")])
    recorded = evaluate.main(["--checkpoint", str(final), "--out", str(tmp_path / "b")])  # no --data
    assert json.dumps(recorded["domains"], sort_keys=True) == json.dumps(explicit["domains"], sort_keys=True)
    assert "NaN" not in (tmp_path / "b" / "metrics.json").read_text()  # strict JSON: no precision when none called
    assert "warning" not in capsys.readouterr().err
    # Its folder at another path (another machine's, a copy) is found by the names of its images: the same report.
    moved = shutil.copytree(class_tree, tmp_path / "moved")
    elsewhere = evaluate.main(["--checkpoint", str(final), "--data", str(moved)])  # beside the checkpoint: no --out
    assert json.dumps(elsewhere["domains"], sort_keys=True) == json.dumps(recorded["domains"], sort_keys=True)
    assert "warning" not in capsys.readouterr().err

    other = tmp_path / "other"
    for label in ("vascular", "nevus", "other"):
        for i in range(5):
            write_rgb(other / label / f"{i}.png", spot_photo(label, size=64, seed=i))
    evaluate.main(["--checkpoint", str(final), "--data", str(other), "--out", str(tmp_path / "c")])
    assert "warning" not in capsys.readouterr().err  # another folder's split, of photos it has never seen
    copies = tmp_path / "copies"  # its own photos, renamed: another folder's split of photos it has seen
    for label in ("vascular", "nevus", "other"):
        (copies / label).mkdir(parents=True)
        for photo in (class_tree / label).iterdir():
            shutil.copy(photo, copies / label / f"renamed_{photo.name}")
    copied = evaluate.main(["--checkpoint", str(final), "--data", str(copies), "--out", str(tmp_path / "d")])
    test_images = copied["domains"]["dermoscopy"]["images"]
    assert (f"warning: the model has seen {test_images} of the {test_images} images of this test split"
            in capsys.readouterr().err)  # warnings go to stderr, apart from the results
    older = {k: v for k, v in load_checkpoint(final)["meta"].items() if k != "seen_images"}  # one without keys
    assert "may hold images it was trained on" in evaluate.seen_warning(older, "test", [])
    refused(capsys, ["--checkpoint", str(final), "--data", str(other)],  # not over its own report
            "name a folder for their report with --out")

    (tmp_path / "empty").mkdir()
    for flags in ([], ["--split", "all", "--out", str(tmp_path / "refused")],  # what is wrong, not --out
                  ["--folder-domain", "clinical", "--out", str(tmp_path / "refused")]):  # not a traceback
        refused(capsys, ["--checkpoint", str(final), "--data", str(tmp_path / "missing"), *flags],
                "error: data folder .*missing does not exist")  # a slip in the command line: 2
        with pytest.raises(SystemExit, match="error: no images found") as stop:  # data that fails: 1
            evaluate.main(["--checkpoint", str(final), "--data", str(tmp_path / "empty"), *flags])
        assert not isinstance(stop.value, UsageError)
    # Labelled photos it has never seen (a clinic's own): every one of them scored, into a report of their own.
    unseen = evaluate.main(["--checkpoint", str(final), "--data", str(other), "--split", "all",
                            "--out", str(tmp_path / "all")])
    assert unseen["domains"]["dermoscopy"]["images"] == 15 and unseen["split"] == "all"
    out, err = capsys.readouterr()
    assert "warning" not in err and f"{other}, taken as dermoscopy photos (--folder-domain clinical if" in out
    phone = evaluate.main(["--checkpoint", str(final), "--data", str(other), "--split", "all", "--out",
                           str(tmp_path / "phone"), "--folder-domain", "clinical"])  # a clinic's phone photos
    assert set(phone["domains"]) == {"clinical"} and phone["domains"]["clinical"]["images"] == 15
    assert f"## Results on every image of `{other}` (not data the model was trained on)" in \
        (tmp_path / "all" / "MODEL_CARD.md").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(class_tree, copy)
    for folders in ([class_tree], [copy], [other, class_tree], [other, copy]):  # its own named, among others too
        message = (f"trained on the images in {folders[-1]}: .* score its test split" if folders[-1] == class_tree
                   else f"every image in {folders[-1]} is one the model has seen .* nothing new to score")
        refused(capsys, ["--checkpoint", str(final), "--data", *map(str, folders), "--split", "all",
                         "--out", str(tmp_path / "refused")], message)
    # Photos it has seen, renamed, among others: left out and counted.
    for photo in sorted(class_tree.rglob("*.png"))[:2]:
        shutil.copy(photo, other / photo.parent.name / f"renamed_{photo.name}")
    mixed = evaluate.main(["--checkpoint", str(final), "--data", str(other), "--split", "all",
                           "--out", str(tmp_path / "mixed")])
    assert mixed["domains"]["dermoscopy"]["images"] == 15 and mixed["left_out_as_seen"] == 2
    assert "left out 2 of 17 images the model has seen" in capsys.readouterr().out
    assert "2 images it has seen, under other names, left out" in (tmp_path / "mixed" / "MODEL_CARD.md").read_text()
    with pytest.raises(SystemExit):  # argparse: --split all needs --data and --out
        evaluate.main(["--checkpoint", str(final), "--split", "all", "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    evaluate.main(["--checkpoint", str(final), "--split", "val"])
    assert (tmp_path / "run" / "val" / "metrics.json").is_file()  # the test split's report beside it is kept

    # The checkpoint names its validation and test images, so the split outlives changes to the data and the code.
    members = load_checkpoint(final)["meta"]["split_members"]
    assert {f"folder/{p.parent.name}/{p.name}" for p in class_tree.rglob("*.png")} > {*members["val"], *members["test"]}
    write_rgb(class_tree / "nevus" / "new.png", spot_photo("nevus", size=64, seed=99))  # reshuffles a rebuilt split
    monkeypatch.setattr(splits_module, "split_samples", lambda *a, **k: pytest.fail("the split was rebuilt"))
    again = evaluate.main(["--checkpoint", str(final), "--out", str(tmp_path / "d")])
    assert json.dumps(again["domains"], sort_keys=True) == json.dumps(recorded["domains"], sort_keys=True)
    monkeypatch.undo()

    # A checkpoint from before the members were recorded: the split rebuilt from its seed is no longer the one it
    # was trained with, and evaluation refuses rather than mix them.
    older = load_checkpoint(final)
    del older["meta"]["split_members"]
    save_checkpoint(tmp_path / "older" / "spotcheck.pt", older)
    with pytest.raises(SystemExit, match="not the one this model was trained with"):
        evaluate.main(["--checkpoint", str(tmp_path / "older" / "spotcheck.pt"), "--out", str(tmp_path / "e")])
    assert not (tmp_path / "e").exists()

    # An image of its test split gone (or relabelled): not the data it was trained on.
    gone = members["test"][0].split("/", 1)[1]
    (class_tree / gone).rename(class_tree / gone.replace(".png", ".moved.png"))
    with pytest.raises(SystemExit, match=f"0 images named folder/{gone}, which this model's test split recorded"):
        evaluate.main(["--checkpoint", str(final), "--out", str(tmp_path / "f")])
    assert not (tmp_path / "f").exists()


def test_auxiliary_diagnosis_head_shapes_training_but_not_the_served_model(tmp_path):
    ham = str(make_ham(tmp_path / "ham"))
    plain = load_checkpoint(train.main(["--data", ham, "--out", str(tmp_path / "plain"), *FAST]))["model"]
    aux = load_checkpoint(train.main(["--data", ham, "--out", str(tmp_path / "aux"), *FAST, "--dx-weight", "0.5"]))["model"]
    assert plain.keys() == aux.keys()  # the 7-diagnosis head is training-only
    assert aux["head.weight"].shape == (3, 256)  # SpotNet's
    assert not torch.allclose(plain["features.0.0.weight"], aux["features.0.0.weight"])  # its loss did train


def test_malignant_weight_pushes_melanomas_away_from_vascular_and_leaves_other_data_alone(class_tree, tmp_path):
    ham = make_ham(tmp_path / "ham")
    melanomas = [read_image(ham / "images" / f"ISIC_{i:07d}.jpg") for i, dx in enumerate(HAM_DX) if dx == "mel"]

    def p_vascular_of_melanomas(weight: str) -> float:
        final = train.main(["--data", str(ham), "--out", str(tmp_path / f"ham{weight}"), *FAST, "--ema", "0",
                            "--draws-per-epoch", "160", "--keep", "last", "--malignant-weight", weight])
        predictor = Predictor(final)
        logits = predictor.network(np.stack([predictor.prepare(image).input for image in melanomas]))[0]
        return float(torch.softmax(torch.from_numpy(logits), 1)[:, 0].mean())  # before calibration

    assert p_vascular_of_melanomas("20") < 0.5 * p_vascular_of_melanomas("0")
    plain, weighted = (load_checkpoint(train.main(["--data", str(class_tree), "--out", str(tmp_path / f"tree{w}"),
                                                   *FAST, "--malignant-weight", w]))["model"] for w in ("0", "20"))
    for name, tensor in plain.items():  # a class-per-folder tree names no malignant lesion: nothing changes
        assert torch.equal(tensor, weighted[name]), name


def test_colour_constancy_travels_with_the_checkpoint_to_both_backends(class_tree, tmp_path):
    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST, "--colour-constancy", "6"])
    assert load_checkpoint(final)["preprocess"]["colour_constancy"] == 6
    photo = read_image(next(class_tree.rglob("*.png")))
    warm = np.clip(photo * np.array([1.1, 1.0, 0.85]), 0, 255).astype(np.uint8)  # the same spot under warmer light
    whole = (0, 0, photo.shape[1], photo.shape[0])
    for backend in ("torch", "onnx"):
        predictor = Predictor(final, backend=backend)
        assert predictor.settings.colour_constancy == 6
        as_taken, under_warm_light = predictor.prepare(photo, whole).input, predictor.prepare(warm, whole).input
        assert np.abs(as_taken - under_warm_light).max() < 0.15  # without constancy: about 0.4


def test_flattened_lightness_framing_travels_with_the_checkpoint_to_both_backends(class_tree, tmp_path):
    plain = train.main(["--data", str(class_tree), "--out", str(tmp_path / "plain"), *FAST])
    flat = train.main(["--data", str(class_tree), "--out", str(tmp_path / "flat"), *FAST, "--flatten-lightness"])
    assert load_checkpoint(plain)["preprocess"]["flatten_lightness"] is False
    assert load_checkpoint(flat)["preprocess"]["flatten_lightness"] is True
    photo = shaded_photo()
    for backend in ("torch", "onnx"):
        x0, y0, x1, y1 = Predictor(plain, backend=backend).prepare(photo).framing.box
        assert x1 - x0 == 300  # the largest square, around the shade
        x0, y0, x1, y1 = Predictor(flat, backend=backend).prepare(photo).framing.box
        assert x0 < 300 < x1 and x1 - x0 < 80  # framed as trained: on the spot, not the whole side-lit photo


@pytest.mark.parametrize("winner", ["averaged", "raw"])
def test_the_best_of_averaged_and_raw_weights_is_kept(class_tree, tmp_path, monkeypatch, winner):
    calls = []

    def fake_scores(*args, **kwargs):  # each epoch scores the averaged weights first, then the raw ones
        calls.append(1)
        kind = "averaged" if len(calls) % 2 else "raw"
        return {"score": (0.9 if kind == winner else 0.1) + 0.01 * len(calls)}  # the last epoch is best

    monkeypatch.setattr(train, "validation_scores", fake_scores)
    ckpt = load_checkpoint(train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST,
                                       "--keep", "best"]))
    assert ckpt["meta"]["kept"] == "best"
    assert ckpt["meta"]["best_weights"] == winner and ckpt["meta"]["best_epoch"] == 1
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    expected = as_shipped(last["model"] if winner == "raw" else
                          {k.removeprefix("module."): v for k, v in last["ema"].items()})
    for name, tensor in ckpt["model"].items():
        assert torch.equal(tensor, expected[name]), name


@pytest.mark.parametrize("extra,kept", [([], "module."), (["--ema", "0"], "")], ids=["averaged", "raw-without-ema"])
def test_keep_last_keeps_the_last_epochs_average_whatever_validation_says(class_tree, tmp_path, monkeypatch,
                                                                          extra, kept):
    scores = iter([0.9, 0.9, 0.1, 0.1])  # the first epoch scores best, averaged and raw alike
    monkeypatch.setattr(train, "validation_scores", lambda *a, **k: {"score": next(scores)})
    ckpt = load_checkpoint(train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST, *extra,
                                       "--keep", "last"]))
    assert ckpt["meta"]["kept"] == "last" and ckpt["meta"]["best_epoch"] == 1  # the second, last epoch
    assert ckpt["meta"]["best_weights"] == ("averaged" if kept else "raw")
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    expected = as_shipped({k.removeprefix("module."): v for k, v in last["ema"].items()} if kept else last["model"])
    for name, tensor in ckpt["model"].items():
        assert torch.equal(tensor, expected[name]), name


@pytest.mark.parametrize("extra", [[], ["--ema", "0"], ["--dx-weight", "0.5"]],
                         ids=["averaged-weights", "raw-weights", "with-dx-head"])
def test_resume_after_interruption_matches_an_uninterrupted_run(class_tree, tmp_path, monkeypatch, capsys, extra):
    data = str(make_ham(tmp_path / "ham")) if "--dx-weight" in extra else str(class_tree)
    run = ["--data", data, *FAST, *extra]
    straight = train.main([*run, "--out", str(tmp_path / "a")])
    interrupted_in_second_epoch(monkeypatch, tmp_path / "b", run)
    capsys.readouterr()
    # The split comes back from last.pt, as it was, not rebuilt (the data or the splitting code may have changed).
    monkeypatch.setattr(splits_module, "split_samples", lambda *a, **k: pytest.fail("the split was rebuilt"))
    # Only the folder is named: the run's settings come from its last.pt (those of the machine aside).
    resumed = train.main(["--out", str(tmp_path / "b"), "--resume", "--workers", "0"])
    printed = capsys.readouterr().out  # training the first epoch again would give the same weights: look
    assert "resumed after epoch 1 of 2" in printed and "epoch 1/2:" not in printed and "epoch 2/2:" in printed

    a, b = load_checkpoint(straight)["model"], load_checkpoint(resumed)["model"]
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name
    last_a, last_b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in "ab")
    assert last_a["epoch"] == last_b["epoch"] == 1
    for part in ("model", "ema"):  # the final epoch's raw and averaged weights, whichever epoch was best
        for name, tensor in last_a[part].items():
            assert torch.allclose(tensor.float(), last_b[part][name].float(), atol=1e-5), (part, name)


def test_a_killed_run_says_how_to_resume_and_exits_as_interrupted(class_tree, tmp_path):
    """`kill` (a cluster's time limit, systemd, a closed terminal) stops training as Ctrl+C does: the command to
    resume, and exit status 130 (it had stopped without a word, and Ctrl+C had exited 1)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "training.train", "--data", str(class_tree), "--out", str(out), *FAST,
               "--epochs", "200"]  # long enough to be killed after its first epoch is saved
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        err = run.communicate(timeout=60)[1]
    finally:
        run.kill()
    assert run.returncode == 130, err
    assert ("interrupted: every finished epoch is saved; continue with: python -m training.train --out "
            f"{out} --resume --workers 0\n") in err  # the machine's flags given, which last.pt does not hold


FILL_THE_DISK_AT_SECOND_EPOCH = """
import errno, os, runpy, sys
import model.checkpoint
save = model.checkpoint.save_checkpoint
def save_until_full(path, checkpoint):
    if path.name == "last.pt" and checkpoint["epoch"] == 1:
        number = getattr(errno, os.environ["DISK_ERROR"])
        raise OSError(number, os.strerror(number))
    save(path, checkpoint)
model.checkpoint.save_checkpoint = save_until_full
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_module("training.train", run_name="__main__")
"""


@pytest.mark.parametrize("error,advice", [("ENOSPC", "make room, then "), ("EROFS", "")])
def test_a_full_disk_is_a_message_with_how_to_resume(class_tree, tmp_path, error, advice):
    """A full disk while saving an epoch had ended training with a traceback from torch's zip writer (RuntimeError:
    "unexpected pos 704 vs 598"), saying neither what was wrong nor that the epochs before were kept. A disk that
    turns read-only (Linux remounts one so after an error) gets the same, without "make room"."""
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-c", FILL_THE_DISK_AT_SECOND_EPOCH, "--data", str(class_tree), "--out",
                          str(out), *FAST], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "DISK_ERROR": error})
    why = os.strerror(getattr(errno, error))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert (f"error: cannot write {out}: {why}; every finished epoch is saved: {advice}continue with: "
            f"python -m training.train --out {out} --resume --workers 0\n") in run.stderr
    assert load_checkpoint(out / "last.pt", finished=False)["epoch"] == 0


def test_a_diverging_run_stops_at_once_and_says_to_lower_the_learning_rate(class_tree, tmp_path, monkeypatch):
    """A learning rate far too high turns the loss to NaN: the run had gone on to its last epoch, answering
    "vascular" for every validation image (the argmax of NaN), then ended with a traceback from the calibration."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        train.main(["--data", str(class_tree), "--out", str(out), *FAST, "--lr", "1e30"])
    assert re.fullmatch(r"error: training diverged in epoch 1 of 2 \(the loss became nan at step \d of 3\): its "
                        r"weights are no longer usable, so it stopped. Start again with a lower learning rate "
                        r"\(this run's: --lr 1e\+30\)", stop.value.code)
    assert not list(out.glob("*.pt"))

    real = train.train_one_epoch  # weights that turn NaN in the second epoch: the first one's are saved

    def diverging_in_second_epoch(model, *args, desc, **kwargs):
        if desc.startswith("epoch 2"):
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return real(model, *args, desc=desc, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", diverging_in_second_epoch)
    with pytest.raises(SystemExit) as stop:
        train.main(["--data", str(class_tree), "--out", str(out), *FAST])
    assert stop.value.code.startswith("error: training diverged in epoch 2 of 2 (the loss became nan at step 1 of 3)")
    assert stop.value.code.endswith(f"(this run's: --lr 0.001), adding --overwrite to replace what it saved in {out}")
    assert not (out / "spotcheck.pt").exists()


def test_a_run_resumes_on_its_data_moved_elsewhere(class_tree, tmp_path, monkeypatch, capsys):
    """Its folder moved (another disk, a renamed project folder above it): --data names where it is now, and the
    recorded split is found there by the images' names. Other folders (more, or of another name) are another run."""
    interrupted_in_second_epoch(monkeypatch, tmp_path / "run", ["--data", str(class_tree), *FAST])
    (tmp_path / "elsewhere").mkdir()
    moved = shutil.move(class_tree, tmp_path / "elsewhere" / class_tree.name)  # another disk, the same folder
    with pytest.raises(UsageError, match="does not exist; if the data has moved, name its folders where they are now "
                                         "with --data"):
        train.main(["--out", str(tmp_path / "run"), "--resume"])
    for other in ([str(moved), str(make_ham(tmp_path / "ham"))], [str(shutil.copytree(moved, tmp_path / "mine"))]):
        with pytest.raises(SystemExit, match="--data was"):  # more folders, or another name: other data
            train.main(["--out", str(tmp_path / "run"), "--resume", "--data", *other])
    capsys.readouterr()
    final = train.main(["--out", str(tmp_path / "run"), "--resume", "--data", str(moved)])
    assert "resumed after epoch 1 of 2" in capsys.readouterr().out
    assert load_checkpoint(final)["meta"]["data"] == [str(Path(moved).resolve())]


@pytest.mark.parametrize("source,flags,marked,zoomed", [
    ("tree", [], 0, 0),
    ("tree", ["--marks-p", "1"], 0, 0),
    ("tree", ["--marks-p-dermoscopy", "1"], 2 * 48, 0),
    ("tree", ["--zoom-out-p", "1"], 0, 2 * 48),
    ("clinical", ["--marks-p", "1"], 2 * 48, 0),
    ("clinical", ["--zoom-out-p", "1"], 0, 0),
    ("tree", ["--folder-domain", "clinical", "--marks-p", "1"], 2 * 48, 0),
    ("tree", ["--folder-domain", "clinical", "--zoom-out-p", "1"], 0, 0),
], ids=["default-off", "marks-clinical-on-dermoscopy", "marks-dermoscopy", "zoom-out-dermoscopy",
        "marks-clinical", "zoom-out-on-clinical", "marks-clinical-tree", "zoom-out-on-clinical-tree"])
def test_marks_and_zoom_out_are_drawn_only_where_asked(class_tree, tmp_path, monkeypatch, source, flags, marked,
                                                       zoomed):
    """--marks-p is for the clinical photos, --marks-p-dermoscopy and --zoom-out-p for the rest (a class-per-folder
    tree counts as dermoscopy unless --folder-domain says otherwise; clinical photos already show skin around the
    spot). At probability 1 every one of the 2 x 48 draws gets it."""
    calls = {"marks": 0, "zoom": 0}

    def counted(name, draw):
        def wrapped(image, rng, **kwargs):
            calls[name] += 1
            return draw(image, rng, **kwargs)
        return wrapped

    monkeypatch.setattr(presets, "add_marks", counted("marks", presets.add_marks))
    monkeypatch.setattr(presets, "zoom_out", counted("zoom", presets.zoom_out))
    data = class_tree if source == "tree" else make_clinical(tmp_path / "clinical")
    ckpt = load_checkpoint(train.main(["--data", str(data), "--out", str(tmp_path / "run"), *FAST, *flags]))
    assert calls == {"marks": marked, "zoom": zoomed}
    assert ckpt["meta"]["flags"]["zoom_out_p"] == (1.0 if "--zoom-out-p" in flags else 0.0)


def test_a_tree_of_phone_photos_is_trained_and_reported_as_clinical_photos(class_tree, tmp_path, capsys):
    """--folder-domain clinical: a class-per-folder tree of phone photos is drawn at the clinical share beside
    dermoscopy, validated and calibrated as clinical photos, and evaluation reports it as such by default."""
    ham = make_ham(tmp_path / "ham")
    splits = splits_module.load_splits([str(ham), str(class_tree)], 0, "clinical")
    assert "tree: 30 images, 5 folds, taken as clinical photos (--folder-domain dermoscopy if they are not)" in \
        capsys.readouterr().out
    weights = sampling_weights(splits["train"], clinical_share=0.3)
    from_tree = np.array([s.source == "folder" for s in splits["train"]])
    assert weights[from_tree].sum() / weights.sum() == pytest.approx(0.3)
    assert {s.domain for s in splits["train"] if s.source == "ham10000"} == {"dermoscopy"}

    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST, "--folder-domain",
                        "clinical"])
    meta = load_checkpoint(final)["meta"]
    assert {"clinical_balanced_accuracy", "score"} <= meta["validation"].keys()
    assert "dermoscopy_balanced_accuracy" not in meta["validation"]
    assert set(meta["validation_safety"]) == {"clinical"}
    metrics = evaluate.main(["--checkpoint", str(final)])  # the model's own tree, taken as it was in training
    assert set(metrics["domains"]) == {"clinical"} and (tmp_path / "run" / "roc_clinical.png").is_file()
    assert "They were taken as clinical photos (`--folder-domain`)" in (tmp_path / "run" / "MODEL_CARD.md").read_text()
    # Its own split relabelled would contradict its card (and, without --out, replace its report): refused.
    for out in ([], ["--out", str(tmp_path / "d")]):
        refused(capsys, ["--checkpoint", str(final), "--folder-domain", "dermoscopy", *out],
                "--folder-domain dermoscopy: the model was trained taking .* as clinical")
    assert set(json.loads((tmp_path / "run" / "metrics.json").read_text())["domains"]) == {"clinical"}
    with pytest.raises(ValueError, match="unknown kind of photo 'phone'"):
        load_dataset(class_tree, "phone")


def test_fine_tuning_starts_from_the_model_and_never_judges_it_on_what_it_has_seen(class_tree, tmp_path, capsys,
                                                                                    monkeypatch):
    """--start-from: a clinic fine-tunes a model on a tree of its own photos, some of which (renamed) the model
    was trained on. Training starts from that model's weights; the lesions it has seen are trained on, never
    validated or tested on; the new model counts them as seen, and its card credits what the weights came from."""
    ham = make_ham(tmp_path / "ham")
    parent = train.main(["--data", str(ham), str(class_tree), "--out", str(tmp_path / "parent"), *FAST])
    own = tmp_path / "own"
    for i, photo in enumerate(sorted(class_tree.rglob("*.png"))):  # the parent's photos, renamed, in lesions of two
        lesion = own / photo.parent.name / f"lesion_{i}"
        lesion.mkdir(parents=True)
        shutil.copy(photo, lesion / "copy.png")
        write_rgb(lesion / "other_view.png", spot_photo(photo.parent.name, size=96, radius=12, seed=100 + i))
    for label in ("vascular", "nevus", "other"):  # and lesions it has never seen
        for i in range(10):
            write_rgb(own / label / f"new_{i}.png", spot_photo(label, size=96, radius=9 + i, seed=200 + i))
    built = []
    monkeypatch.setattr(train, "build", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: (_ for _ in ()).throw(Started()))  # the model is built
    run = ["--data", str(own), "--out", str(tmp_path / "child"), *FAST, "--start-from", str(parent)]
    with pytest.raises(Started):
        train.main(run)
    parent_ckpt = load_checkpoint(parent)
    for name, tensor in built[0].state_dict().items():  # its weights, not fresh ones
        assert torch.equal(tensor, parent_ckpt["model"][name].to(tensor.dtype)), name
    assert f"test images are of lesions {parent} has seen: trained on instead" in capsys.readouterr().out
    monkeypatch.undo()

    child = load_checkpoint(train.main(run))["meta"]
    held = [name.split("/")[-1] for split in ("val", "test") for name in child["split_members"][split]]
    assert held and all(name.startswith("new_") for name in held)  # no photo of a lesion it has seen
    assert set(parent_ckpt["meta"]["seen_images"]) <= set(child["seen_images"])
    assert child["started_from"] == {"checkpoint": "spotcheck.pt", "sha256": sha256_of(parent),
                                     "data": [str(ham), str(class_tree)]}
    assert child["sources"] == ["folder", "ham10000"]  # its weights learned from HAM10000 too
    evaluate.main(["--checkpoint", str(tmp_path / "child" / "spotcheck.pt")])
    card = (tmp_path / "child" / "MODEL_CARD.md").read_text()
    assert (f"Trained from the SpotCheck model `spotcheck.pt` (SHA-256 {sha256_of(parent)[:12]}, itself trained on "
            f"`{ham}`, `{class_tree}`)") in card
    assert "Tschandl" in card and "non-commercial research use" in card  # HAM10000's credit and licence carry on

    for flags, message in ((["--image-size", "64"], "was trained with --image-size 48"),
                           (["--arch", "lite0"], "was trained with --arch spotnet"),
                           (["--flatten-lightness"], "was trained with no --flatten-lightness"),
                           (["--from-scratch"], "give one of them")):
        with pytest.raises(SystemExit, match=message):
            train.main([*run[:-2], "--out", str(tmp_path / "refused"), "--start-from", str(parent), *flags])
    with pytest.raises(SystemExit, match="has no .*has seen the others; fine-tune on photos it has not seen"):
        train.main(["--data", str(class_tree), "--out", str(tmp_path / "same"), *FAST, "--start-from", str(parent)])
    # Its HAM10000 beside new photos: all of it seen, so none of it can validate, and training says so.
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: (_ for _ in ()).throw(Started()))
    capsys.readouterr()
    with pytest.raises(Started):
        train.main(["--data", str(ham), str(own), "--folder-domain", "clinical", "--out", str(tmp_path / "both"),
                    *FAST, "--start-from", str(parent)])
    assert "warning: no dermoscopy photos are left to validate on" in capsys.readouterr().err
    # A clinic's phone photos alone: the parent's dermoscopy is gone from the run altogether, and training says so.
    with pytest.raises(Started):
        train.main(["--data", str(own), "--folder-domain", "clinical", "--out", str(tmp_path / "phones"), *FAST,
                    "--start-from", str(parent)])
    assert f"warning: {parent} was validated on dermoscopy photos too, and this run has none" in capsys.readouterr().err


def test_a_copy_of_a_training_image_never_validates_or_tests(class_tree, tmp_path, capsys, monkeypatch):
    """The same file in two data folders, or twice under two names, had landed in training and in test."""
    other = tmp_path / "other"
    for label in ("vascular", "nevus", "other"):
        (other / label).mkdir(parents=True)
        for i, photo in enumerate(sorted((class_tree / label).iterdir())[:5]):  # half its photos, renamed
            shutil.copy(photo, other / label / f"copy_{i}.png")
        for i in range(10):
            write_rgb(other / label / f"new_{i}.png", spot_photo(label, size=96, radius=9 + i % 5, seed=300 + i))
    recorded = []
    monkeypatch.setattr(train, "split_members",
                        lambda splits: recorded.append(splits) or (_ for _ in ()).throw(Started()))
    with pytest.raises(Started):
        train.main(["--data", str(class_tree), str(other), "--out", str(tmp_path / "run"), *FAST])
    held = [s.path for name in ("val", "test") for s in recorded[0][name]]
    assert held and not set(seen_keys(held)) & set(seen_keys([s.path for s in recorded[0]["train"]]))
    assert "test images are of lesions with a copy in another split" in capsys.readouterr().out


def test_identical_unreadable_photos_are_skipped_as_unreadable_not_moved_as_copies(class_tree, tmp_path, capsys,
                                                                                     monkeypatch):
    """Three byte-identical broken files in one class had been taken for copies of one photo: moved into training
    with a message about copies (and, with few photos, a stop saying to add photos of other lesions)."""
    broken = [class_tree / "vascular" / f"broken_{i}.jpg" for i in range(3)]
    for path in broken:
        path.write_bytes(b"not a photo")
    recorded = []
    monkeypatch.setattr(train, "split_members", lambda splits: recorded.append(splits) or {})
    monkeypatch.setattr(train, "replace_run", lambda *a: (_ for _ in ()).throw(Started()))  # after decoding
    with pytest.raises(Started):
        train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST])
    out, err = capsys.readouterr()
    assert "copy in another split" not in out
    split_of = {s.path: name for name, part in recorded[0].items() for s in part}
    assert {split_of[path] for path in broken} == {"train", "val", "test"}  # where the split put them: not moved
    for path in broken:  # each one decoded is named as unreadable (test images: evaluation names them)
        assert (f"  {path}: the file is not a readable image" in err) is (split_of[path] != "test")


def test_run_seed_varies_the_run_but_not_the_split(class_tree, tmp_path):
    """--run-seed reseeds the draws and the weights only, so one recipe can be run several times on one split."""
    def run(name, *flags):
        return load_checkpoint(train.main(["--data", str(class_tree), "--out", str(tmp_path / name), *FAST, *flags]))

    default, same, other = run("default"), run("same", "--run-seed", "0"), run("other", "--run-seed", "1")
    for name, tensor in default["model"].items():
        assert torch.equal(tensor, same["model"][name]), name  # --run-seed defaults to --seed
    assert not torch.equal(default["model"]["head.weight"], other["model"]["head.weight"])
    assert other["meta"]["split_counts"] == default["meta"]["split_counts"] and other["meta"]["split_seed"] == 0


def test_a_folder_without_training_data_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    with pytest.raises(SystemExit, match=r"error: no images found under .*photos/\{vascular,nevus,other\}"):
        train.main(["--data", str(tmp_path / "photos"), "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="does not exist$"):
        train.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    # The bare command away from this project's machines: what its default folders are, and what to give instead.
    monkeypatch.setattr(datasets_module, "DEFAULT_DATA", [str(tmp_path / "shared" / "ham10000")])
    with pytest.raises(SystemExit, match=r"ham10000 does not exist: it is where this project's machines keep .*--data "
                                         r"\(`python -m data.download --out data_ham10000/` fetches HAM10000\)"):
        train.main(["--data", str(tmp_path / "shared" / "ham10000"), "--out", str(tmp_path / "run")])


def test_data_that_cannot_be_read_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch):
    """A labels.csv saved in a Windows code page, and a folder without read permission (simulated: tests may run as
    root, whom permissions do not stop), stop training and evaluation with the file named and what to do."""
    clinical = make_clinical(tmp_path / "clinical")
    (clinical / "labels.csv").write_bytes("filename,label\ncaf\u00e9.jpg,nevus\n".encode("cp1252"))
    for command in (train.main, evaluate.main):
        with pytest.raises(SystemExit, match=r"error: .*labels.csv is not UTF-8 text: save it as UTF-8"):
            command(["--data", str(clinical), "--out", str(tmp_path / "run"), *([] if command is evaluate.main else FAST)])

    def unreadable(root):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(datasets_module, "ham10000_metadata", unreadable)
    for command in (train.main, evaluate.main):
        with pytest.raises(SystemExit) as stopped:
            command(["--data", str(clinical), "--out", str(tmp_path / "run")])
        assert str(stopped.value) == f"error: cannot read {clinical}: Permission denied"
    assert not (tmp_path / "run" / "spotcheck.pt").exists()


def test_a_class_missing_from_training_or_validation_is_a_clear_error(tmp_path):
    tree = tmp_path / "tree"
    for label, n in (("vascular", 2), ("nevus", 20), ("other", 20)):  # 2 vascular photos cannot reach every split
        for i in range(n):
            write_rgb(tree / label / f"{i}.png", spot_photo(label, size=48, seed=i))
    with pytest.raises(SystemExit, match="split has no vascular images"):
        train.main(["--data", str(tree), "--out", str(tmp_path / "run"), *FAST])
    assert not (tmp_path / "run" / "spotcheck.pt").exists()


def test_a_class_whose_photos_cannot_be_read_is_a_clear_error(class_tree, tmp_path):
    """Counted before decoding, the class is there; unreadable photos are skipped while decoding, so it is counted
    again after (a validation split without it ended in a crash at the export, after all the training)."""
    for i, photo in enumerate((class_tree / "vascular").iterdir()):
        photo.write_bytes(f"not a photo ({i})".encode())
    with pytest.raises(SystemExit, match="split has no readable vascular images"):
        train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST])
    for i, photo in enumerate(class_tree.rglob("*.png")):  # none readable at all: the same, not a traceback
        photo.write_bytes(f"not a photo either ({i})".encode())
    with pytest.raises(SystemExit, match="split has no readable vascular or nevus or other images"):
        train.main(["--data", str(class_tree), "--out", str(tmp_path / "run2"), *FAST])


def test_resume_refuses_other_settings_before_reading_any_image(class_tree, tmp_path, monkeypatch):
    run = ["--data", str(class_tree), "--out", str(tmp_path / "run")]
    train.main([*run, *FAST])
    monkeypatch.setattr(train, "load_splits", lambda *a: pytest.fail("the data was read before the flags were checked"))
    longer = [*FAST[:1], "3", *FAST[2:]]  # --epochs 3 instead of 2: the learning-rate schedule was made for 2
    with pytest.raises(SystemExit, match="--epochs was 2, now 3"):
        train.main([*run, *longer, "--resume"])
    with pytest.raises(SystemExit, match="--seed was 0, now 5"):  # another split
        train.main([*run, *FAST, "--seed", "5", "--resume"])
    with pytest.raises(SystemExit, match="--epochs was 2, now 10"):  # named at its default value: still named
        train.main([*run, "--epochs", "10", "--resume"])


def test_a_data_folder_given_twice_is_refused_as_such(class_tree, capsys):
    """It had been read twice and refused as "image names occur twice ...: rename all but one of each"."""
    with pytest.raises(SystemExit):
        train.parse_args(["--data", str(class_tree), f"{class_tree}/"])
    assert f"--data names {class_tree} twice: give each data folder once" in capsys.readouterr().err


def test_named_flags_are_those_on_the_command_line_whatever_their_values():
    assert train.named_flags(["--out", "x", "--epochs", "10", "--resume", "--run-seed", "0"]) == {
        "out", "epochs", "resume", "run_seed"}
    assert train.named_flags([]) == set()


def test_resuming_a_finished_run_recalibrates_without_training_again(class_tree, tmp_path, monkeypatch):
    """Calibration-only flags may change on --resume: the finished run's weights are kept and only the decision
    rule is fitted again (no epoch is trained)."""
    run = ["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST]
    first = load_checkpoint(train.main(run))
    monkeypatch.setattr(train, "EpochDraws", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = load_checkpoint(train.main([*run, "--resume", "--unsure-rate", "0.6", "--max-false-vascular", "0.2"]))
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, again["model"][name]), name
    assert again["meta"]["validation"] == first["meta"]["validation"]
    assert again["calibration"]["unsure_below"] > first["calibration"]["unsure_below"]
    assert again["meta"]["flags"]["max_false_vascular"] == 0.2 and first["meta"]["flags"]["max_false_vascular"] == 0.005


def test_unreadable_images_in_the_data_are_skipped_with_a_warning_not_a_stop(class_tree, tmp_path, capsys, predictor):
    """A researcher's folder holds truncated photos and a text file named like one: training goes on without them,
    and so does evaluation, each saying which were left out."""
    bad = []
    for label in ("vascular", "nevus", "other"):
        good = (class_tree / label / f"{label}_0.png").read_bytes()
        bad.append(class_tree / label / "truncated.png")
        bad[-1].write_bytes(good[: len(good) // 3])
    bad.append(class_tree / "nevus" / "notes.jpg")
    bad[-1].write_text("not a photo")
    # Readable, but too small for the app to judge (it answers them "unsure"): not trained on as spots either.
    bad += [write_rgb(class_tree / "other" / "thumbnail.png", spot_photo("other", size=40)),
            write_rgb(class_tree / "nevus" / "strip.png", spot_photo("nevus", size=400)[:20])]
    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST])
    out = capsys.readouterr().err
    assert "images that cannot be used:" in out and "the file is not a readable image" in out  # and why
    assert "strip.png: too small: 400x20 pixels, under 48 on a side" in out  # (the thumbnail is a test image)
    meta = load_checkpoint(final)["meta"]
    in_split = {split: sum(f"folder/{p.parent.name}/{p.name}" in meta["split_members"][split] for p in bad)
                for split in ("val", "test")}
    assert meta["unreadable"] == {"train": len(bad) - in_split["val"] - in_split["test"], "val": in_split["val"]}
    listed = [path for path in bad if f"\n  {path}: " in out]  # each one named (not 3 of them), with why
    assert len(listed) == len(bad) - in_split["test"] > 3  # (test images are read by evaluation, which names them)
    evaluate.main(["--checkpoint", str(final)])  # the card says how many were left out of training
    assert (f"Of these, {meta['unreadable']['train']} training and {meta['unreadable']['val']} validation images "
            "could not be read, or were too small") in (tmp_path / "run" / "MODEL_CARD.md").read_text()

    # Evaluation scores what the app would: a photo too small to judge counts, as the app's "unsure".
    unreadable, too_small = bad[:-2], bad[-2:]
    samples = [Sample(path, path.parent.name, path.name, path.parent.name, "folder", "dermoscopy") for path in
               [*bad, class_tree / "other" / "other_0.png"]]
    kept, probs, decided = evaluate.predict_samples(predictor, samples)
    assert kept == samples[-3:] and probs.shape == (3, 3) and decided[:2] == ["unsure", "unsure"]
    warned = capsys.readouterr().err
    assert all(f"warning: skipped {path}" in warned for path in unreadable)
    assert not any(str(path) in warned for path in too_small)


class Started(Exception):
    """Raised by a stand-in to stop training at a known point."""


@pytest.mark.parametrize("flags, from_imagenet",
                         [([], True), (["--from-scratch"], False), (["--arch", "spotnet"], False)])
def test_litenet_starts_from_imagenet_unless_told_otherwise(class_tree, tmp_path, monkeypatch, flags, from_imagenet):
    loaded = []
    monkeypatch.setattr(LiteNet, "load_imagenet", lambda net, path: loaded.append(path))
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: (_ for _ in ()).throw(Started()))  # the model is built
    with pytest.raises(Started):
        train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *TINY, *flags])
    assert loaded == ([train.imagenet_weights()] if from_imagenet else [])


@pytest.mark.parametrize("device, message", [
    ("cuda", "PyTorch sees no CUDA GPU here"), ("gpu0", "not a device PyTorch knows"), ("meta", "trains on cpu or cuda")])
def test_a_device_that_is_not_here_is_refused_before_any_image_is_read(tmp_path, monkeypatch, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(train, "load_splits", lambda *a: pytest.fail("the data was read before the device was checked"))
    with pytest.raises(SystemExit, match=message):
        train.main(["--out", str(tmp_path / "run"), "--device", device])


@pytest.mark.parametrize("flag, value, message", [
    ("--unsure-rate", "10", "must be between 0 and 1"), ("--max-false-vascular", "5", "must be between 0 and 1"),
    ("--clinical-share", "1.5", "must be between 0 and 1"), ("--ema", "-0.1", "must be between 0 and 1"),
    ("--ood-pass", "nan", "must be between 0 and 1"),
    # A negative constancy norm would turn every input black (the light's estimate becomes 0), silently.
    ("--colour-constancy", "-2", "must be 0 or more"), ("--workers", "-1", "must be 0 or more"),
    ("--malignant-weight", "-1", "must be 0 or more"), ("--dx-weight", "inf", "must be 0 or more"),
    ("--weight-decay", "-0.0005", "must be 0 or more"), ("--lr", "0", "must be a number over 0"),
    ("--threads", "0", "must be at least 1"), ("--decode-workers", "0", "must be at least 1"),
    # A negative seed had failed only after the data was read, and after --overwrite had deleted the run it replaced.
    ("--seed", "-1", "must be from 0 to"), ("--run-seed", str(2**32), "must be from 0 to"),
    # An empty path (an unset shell variable) is the current folder: a run had been written there.
    ("--out", "", "is empty"), ("--data", "", "is empty"), ("--start-from", " ", "is empty")])
def test_settings_out_of_range_are_refused_before_training(capsys, flag, value, message):
    with pytest.raises(SystemExit):
        train.parse_args([flag, value])
    assert message in capsys.readouterr().err


def test_a_cut_off_last_checkpoint_is_a_clear_error_on_resume(class_tree, tmp_path):
    out = tmp_path / "run"
    train.main(["--data", str(class_tree), "--out", str(out), *FAST])
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:3000])
    with pytest.raises(SystemExit, match="last.pt cannot be read"):
        train.main(["--data", str(class_tree), "--out", str(out), *FAST, "--resume"])


def test_keeping_the_best_raw_weights_records_their_own_validation_scores(class_tree, tmp_path):
    """The history row leads with the averaged weights' scores; when the raw ones are kept, theirs are recorded."""
    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST, "--epochs", "3",
                        "--draws-per-epoch", "192", "--keep", "best", "--ema", "0.999", "--lr", "3e-3"])
    # (an average this slow stays near the start, so the raw weights win)
    meta = load_checkpoint(final)["meta"]
    row = json.loads((tmp_path / "run" / "history.json").read_text())[meta["best_epoch"]]
    assert meta["best_weights"] == "raw"
    assert meta["validation"]["score"] == row["raw_score"] != row["score"]


def test_a_finished_run_is_replaced_only_when_asked(class_tree, tmp_path, capsys):
    """Training into a folder that holds a run would silently replace it (a typo in --out can cost a day's run)
    and leave its report describing a model that is gone: it is refused, or with --overwrite replaced whole."""
    out = tmp_path / "run"
    first = train.main(["--data", str(class_tree), "--out", str(out), *FAST])
    evaluate.main(["--checkpoint", str(first), "--data", str(class_tree)])  # its report, beside it
    evaluate.main(["--checkpoint", str(first), "--data", str(class_tree), "--split", "val"])  # and in val/
    (out / "notes.txt").write_text("mine")
    digest = sha256_of(first)
    # Not --resume, which in a finished run trains nothing (it had been the first advice)
    with pytest.raises(SystemExit, match=r"already holds a finished training run \(.*; all 2 of its epochs trained\): to "
                                         r"train again, write into another --out, or replace it with --overwrite "
                                         r"\(--resume trains nothing more in a finished run: it only picks the weights "
                                         r"and fits the decision rule again"):
        train.main(["--data", str(class_tree), "--out", str(out), *FAST, "--lr", "3e-3"])
    assert sha256_of(first) == digest and (out / "MODEL_CARD.md").is_file()
    for overwrite in ([], ["--overwrite"]):  # without it, it had been told to add --overwrite, then refused
        with pytest.raises(SystemExit, match=f"is part of the run in {out}, which training there would replace: "
                                             "train into another --out"):
            train.main(["--data", str(class_tree), "--out", str(out), *FAST, *overwrite, "--start-from", str(first)])

    second = train.main(["--data", str(class_tree), "--out", str(out), *FAST, "--lr", "3e-3", "--overwrite"])
    assert "out-of-date files from" in capsys.readouterr().out
    assert sha256_of(second) != digest and (out / "notes.txt").read_text() == "mine"
    assert not any((folder / name).exists() for folder in (out, out / "val") for name in ("metrics.json", "MODEL_CARD.md"))
    assert not list(out.glob("*.png")) and not list((out / "val").glob("*.png"))


def test_a_run_is_advised_to_resume_only_while_it_has_something_left_to_do(tmp_path):
    """--resume continues a run with epochs left, or one stopped after its last epoch, before its model was written;
    a finished run it would only recalibrate, so training into one does not advise it."""
    out = tmp_path / "run"
    out.mkdir()
    for epoch, model_written, finished in ((0, False, False), (1, False, False), (1, True, True)):
        torch.save({"epoch": epoch, "flags": {"epochs": 2}}, out / "last.pt")  # what finished_epochs reads of it
        if model_written:
            (out / "spotcheck.pt").write_bytes(b"its model")
        with pytest.raises(SystemExit) as refused:
            runs.previous_run(out, False)
        assert ("continue it with --resume" in str(refused.value)) is not finished
        assert ("a finished training run" in str(refused.value)) is finished
    with pytest.raises(SystemExit, match=r"holds a training run \(.*\): write into another --out") as refused:
        runs.previous_run(out, False, resumable=False)  # training.ensemble's runs: --resume is never advised
    assert "--resume" not in str(refused.value)


def test_a_run_refused_for_its_data_leaves_no_folder_behind(tmp_path):
    with pytest.raises(UsageError, match="data folder .*missing does not exist"):  # exit status 2
        train.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), *FAST])
    assert not (tmp_path / "run").exists()


def test_resume_and_overwrite_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--resume", "--overwrite"])
    assert "give one of them" in capsys.readouterr().err


def test_resuming_a_finished_run_recalibrates_it_and_drops_its_out_of_date_report(class_tree, tmp_path, capsys):
    """--resume on a finished run refits the decision rule with the settings given (here --ood-pass, which the
    feature-distance bar follows) and removes the report on the old calibration; with no last.pt to resume from, a
    finished run is refused as any training into its folder is."""
    out = tmp_path / "run"
    final = train.main(["--data", str(class_tree), "--out", str(out), *FAST])
    before = load_checkpoint(final)["calibration"]["ood_distance_max"]
    evaluate.main(["--checkpoint", str(final), "--data", str(class_tree)])
    train.main(["--data", str(class_tree), "--out", str(out), *FAST, "--resume"])  # the same settings: report stays
    assert (out / "MODEL_CARD.md").exists() and "nothing is trained" in capsys.readouterr().out
    train.main(["--data", str(class_tree), "--out", str(out), *FAST, "--resume", "--ood-pass", "0.5"])
    assert load_checkpoint(final)["calibration"]["ood_distance_max"] < before
    assert not (out / "MODEL_CARD.md").exists() and "out-of-date files" in capsys.readouterr().out
    (out / "last.pt").unlink()
    with pytest.raises(SystemExit, match="nothing to resume"):
        train.main(["--data", str(class_tree), "--out", str(out), *FAST, "--resume"])
    with pytest.raises(SystemExit, match="nothing to resume"):  # nor does an empty folder start a run of defaults
        train.main(["--out", str(tmp_path / "empty"), "--resume"])
    # A slip in --out: "start the run again without --resume" would have trained into the mistyped folder.
    with pytest.raises(SystemExit, match="nothing to resume in .*: it does not exist; give --out the folder of the run"):
        train.main(["--out", str(tmp_path / "mistyped"), "--resume"])
    with pytest.raises(SystemExit, match="nothing to resume in .*: it is a file"):
        train.main(["--out", str(out / "history.json"), "--resume"])


def test_a_report_on_a_folder_without_every_class_says_what_its_figures_are(class_tree, tmp_path):
    """A clinic's folder of moles and other spots: its balanced accuracy is over two classes, and the card says so;
    an empty table and HAM10000's limitations are left out of a card for a model that never saw HAM10000."""
    final = train.main(["--data", str(class_tree), "--out", str(tmp_path / "run"), *FAST])
    clinic = tmp_path / "clinic"
    for label in ("nevus", "other"):
        for i in range(4):
            write_rgb(clinic / label / f"{label}_{i}.png", spot_photo(label, size=96, radius=12, seed=50 + i))
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "roc_clinical.png").write_bytes(b"an earlier report's, on clinical photos")
    metrics = evaluate.main(["--checkpoint", str(final), "--data", str(clinic), "--split", "all",
                             "--out", str(tmp_path / "report")])
    assert metrics["domains"]["dermoscopy"]["argmax"]["per_class"]["vascular"]["recall"] != \
        metrics["domains"]["dermoscopy"]["argmax"]["per_class"]["vascular"]["recall"]  # NaN: nothing to measure
    card = (tmp_path / "report" / "MODEL_CARD.md").read_text()
    assert "dermoscopy holds no vascular images, so its figure is not comparable with a three-class one" in card
    assert "(None of these images is vascular, or a melanoma or carcinoma by its recorded diagnosis.)" in card
    assert "HAM10000 comes mostly" not in card and "| domain | lesions |" not in card
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == [
        "confusion_dermoscopy.png", "reliability_dermoscopy.png", "roc_dermoscopy.png"]  # no figure of another run


def test_a_tree_of_lesion_subfolders_with_camera_file_names_trains_evaluates_and_resumes(tmp_path, monkeypatch):
    """Phones name photos IMG_0001.JPG, IMG_0002.JPG, ... in every folder: lesion subfolders of one class repeat the
    names. The split is recorded by name, so the name holds the subfolder; before, such a run trained for hours and
    then could be neither evaluated nor resumed ("not the data it was trained on")."""
    tree = tmp_path / "photos"
    for label in ("vascular", "nevus", "other"):
        for lesion in range(5):
            for shot in range(2):
                image = spot_photo(label, size=96, radius=10 + lesion, centre=(40 + shot * 4, 44), seed=lesion)
                write_rgb(tree / label / f"patient{lesion}" / f"IMG_000{shot + 1}.png", image)
    out = tmp_path / "run"
    interrupted_in_second_epoch(monkeypatch, out, ["--data", str(tree), *FAST])
    final = train.main(["--out", str(out), "--resume", "--workers", "0"])
    recorded = [name for part in load_checkpoint(final)["meta"]["split_members"].values() for name in part]
    assert recorded and all(name.split("/")[2].startswith("patient") for name in recorded)
    metrics = evaluate.main(["--checkpoint", str(final)])
    assert metrics["domains"]["dermoscopy"]["images"] == len(load_checkpoint(final)["meta"]["split_members"]["test"])


def test_a_model_that_recorded_its_lesion_subfolders_images_by_file_name_alone_is_still_evaluated(tmp_path,
                                                                                                  monkeypatch):
    """Checkpoints written before December 6, 2026 (no split_names) named a class folder's images without their subfolders."""
    tree = tmp_path / "photos"
    for label in ("vascular", "nevus", "other"):
        for lesion in range(5):
            for shot in range(2):
                write_rgb(tree / label / f"lesion{lesion}" / f"{label}_{lesion}_{shot}.png",
                          spot_photo(label, size=96, radius=10 + lesion, centre=(40 + shot * 4, 44), seed=lesion))
    with monkeypatch.context() as older:  # as the code of then named them, and without saying how
        older.setattr(splits_module, "sample_name", lambda s, legacy=False: f"{s.source}/{s.label}/{s.path.name}")
        final = train.main(["--data", str(tree), "--out", str(tmp_path / "run"), *FAST])
    checkpoint = load_checkpoint(final)
    del checkpoint["meta"]["split_names"]
    save_checkpoint(final, checkpoint)
    export(final)  # its ONNX export in step again
    assert all(name.count("/") == 2 for part in checkpoint["meta"]["split_members"].values() for name in part)
    metrics = evaluate.main(["--checkpoint", str(final), "--data", str(tree)])
    assert metrics["domains"]["dermoscopy"]["images"] == len(load_checkpoint(final)["meta"]["split_members"]["test"])


def test_two_images_of_one_name_in_one_class_are_refused_before_training(class_tree, tmp_path):
    shutil.copytree(class_tree, tmp_path / "more")  # a second tree, say of another clinic, with the same names
    with pytest.raises(SystemExit, match=f"30 image names occur twice or more .*{tmp_path / 'more'}/nevus/nevus_0.png "
                                         f"and {class_tree}/nevus/nevus_0.png\\)"):
        train.main(["--data", str(class_tree), str(tmp_path / "more"), "--out", str(tmp_path / "run"), *FAST])
    assert not (tmp_path / "run").exists()


def test_a_resumed_fine_tune_keeps_the_model_it_started_from(class_tree, tmp_path, monkeypatch):
    """The --start-from file may change before the run is resumed (a `git pull` updates the shipped model, or it is
    moved): the resumed run's weights come from last.pt, and so must the record of the parent they were tuned from."""
    parent = tmp_path / "parent.pt"
    shutil.copy(train.main(["--data", str(class_tree), "--out", str(tmp_path / "p"), *FAST]), parent)
    digest = sha256_of(parent)
    mine = tmp_path / "mine"
    for label in ("vascular", "nevus", "other"):
        for i in range(10):
            write_rgb(mine / label / f"mine_{i}.png", spot_photo(label, size=96, radius=8 + i % 4, centre=(30 + i * 3, 50),
                                                                 seed=100 + i))
    out = tmp_path / "tuned"
    interrupted_in_second_epoch(monkeypatch, out, ["--data", str(mine), "--start-from", str(parent), *FAST])
    parent.unlink()
    meta = load_checkpoint(train.main(["--out", str(out), "--resume", "--workers", "0"]))["meta"]
    assert meta["started_from"]["sha256"] == digest and meta["sources"] == ["folder"]


def test_a_model_of_ones_own_folder_is_evaluated_from_anywhere_or_told_where_its_data_is(class_tree, tmp_path,
                                                                                       monkeypatch, capsys):
    """A relative --data is recorded as the full path, so evaluation finds it from another working folder; when the
    folder is gone it says so (it used to fall back to HAM10000 and fail on that, or score it)."""
    monkeypatch.chdir(class_tree.parent)
    final = train.main(["--data", class_tree.name, "--out", str(tmp_path / "run"), *FAST])
    monkeypatch.chdir(tmp_path / "run")
    assert load_checkpoint(final)["meta"]["data"] == [str(class_tree)]
    assert evaluate.main(["--checkpoint", str(final)])["domains"]["dermoscopy"]["images"] > 0
    train.main(["--out", str(tmp_path / "run"), "--resume", "--workers", "0"])  # and resumed from there
    shutil.move(class_tree, tmp_path / "moved")
    refused(capsys, ["--checkpoint", str(final)], f"trained on \\({class_tree}\\) are not all on this machine: .*--data")
    assert evaluate.main(["--checkpoint", str(final), "--data", str(tmp_path / "moved")])["domains"]


def test_the_card_states_the_share_of_clinical_photos_the_run_drew(class_tree, tmp_path):
    """A clinic's phone photos alone are every draw, whatever --clinical-share says (it splits draws between the
    two kinds of photo when there are both); the card said 0.3."""
    final = train.main(["--data", str(class_tree), "--folder-domain", "clinical", "--out", str(tmp_path / "run"),
                        *FAST])
    assert load_checkpoint(final)["meta"]["clinical_draw_share"] == 1.0
    evaluate.main(["--checkpoint", str(final)])
    assert "- Clinical photos made up 100% of this run's training draws." in (tmp_path / "run" / "MODEL_CARD.md").read_text()
