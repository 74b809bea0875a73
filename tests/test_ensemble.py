"""An ensemble of runs: one network to everything downstream, built and finished by `python -m training.ensemble`."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.ood as ood_bench
import training.train as train
from data.flags import UsageError
from data.images import read_image
from model.checkpoint import load_checkpoint, network_from, save_checkpoint
from model.net import Ensemble, LiteNet, SpotNet
from model.predictor import Predictor, class_activation_map
from tests.conftest import spot_photo, write_rgb
from tests.test_training import FAST
from training import ensemble, evaluate


def test_an_ensemble_averages_its_members_logits_and_heatmaps_exactly():
    torch.manual_seed(0)
    members = [SpotNet().eval(), SpotNet().eval(), SpotNet().eval()]
    net = Ensemble(members).eval()
    net.ood_layer = 5
    assert [m.ood_layer for m in members] == [5, 5, 5] and net.blocks == len(members[0].features)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, maps, ood = net.forward_with_maps(x)
        singles = [m.forward_with_maps(x) for m in members]
        assert torch.allclose(net(x), logits, atol=1e-6)
        assert torch.allclose(logits, torch.stack([s[0] for s in singles]).mean(0), atol=1e-6)
        assert torch.allclose(net.head(torch.cat([m.pooled(x) for m in members], 1)), logits, atol=1e-5)
    assert maps.shape[1] == 3 * 256 and ood.shape == (2, 3 * 160)  # the members' side by side
    # The class activation map over the side-by-side maps, before its rectifying, is the members' maps' average.
    weights = net.head.weight.numpy()
    together = np.tensordot(weights[0], maps[0].numpy(), axes=1)
    apart = np.mean([np.tensordot(m.head.weight.detach().numpy()[0], s[1][0].numpy(), axes=1)
                     for m, s in zip(members, singles)], axis=0)
    np.testing.assert_allclose(together, apart, atol=1e-5)
    assert class_activation_map(maps[0].numpy(), weights[0], 64).shape == (64, 64)


def test_a_checkpoint_says_how_many_members_its_network_has():
    members = [LiteNet(), LiteNet()]
    checkpoint = {"arch": "lite0", "members": 2, "classes": ["vascular", "nevus", "other"],
                  "model": Ensemble(members).state_dict(), "ood": {"layer": 11}}
    net = network_from(checkpoint)
    assert isinstance(net, Ensemble) and len(net.members) == 2 and net.ood_layer == 11


@pytest.fixture
def two_runs(class_tree, tmp_path):
    return [train.main(["--data", str(class_tree), "--out", str(tmp_path / f"run{seed}"), "--run-seed", str(seed),
                        *FAST]) for seed in (0, 1)]


def test_ensemble_finishes_two_runs_into_one_served_model(two_runs, class_tree, tmp_path):
    final = ensemble.main([*map(str, two_runs), "--out", str(tmp_path / "both")])
    ckpt = load_checkpoint(final)
    assert ckpt["members"] == 2 and ckpt["arch"] == "spotnet"
    assert [m["run_seed"] for m in ckpt["meta"]["members"]] == [0, 1]
    assert ckpt["meta"]["flags"]["run_seed"] == [0, 1] and ckpt["meta"]["kept"] == "ensemble"
    assert {"score", "dermoscopy_balanced_accuracy"} <= ckpt["meta"]["validation"].keys()
    assert ckpt["ood"]["means"].shape[1] == 2 * 256  # SpotNet's last block's features, side by side
    singles = [load_checkpoint(p)["meta"]["parameters"] for p in two_runs]
    assert ckpt["meta"]["parameters"] == sum(singles)
    assert ckpt["meta"]["clinical_draw_share"] == 0.0  # dermoscopy alone: the card names no clinical share
    # Both backends serve it, alike, and its answer is the members' averaged logits calibrated anew.
    photo = next(class_tree.rglob("*.png"))
    by_torch, by_onnx = Predictor(final, backend="torch"), Predictor(final, backend="onnx")
    a, b = by_torch.predict_file(photo), by_onnx.predict_file(photo)
    assert a.label == b.label and abs(a.probabilities["vascular"] - b.probabilities["vascular"]) < 1e-4
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-3)
    x = by_torch.prepare(read_image(photo))
    logits = by_torch.network(x.input[None])[0]
    members = [Predictor(p, backend="torch").network(x.input[None])[0] for p in two_runs]
    np.testing.assert_allclose(logits, np.mean(members, axis=0), atol=1e-4)
    card_dir = tmp_path / "eval"
    evaluate.main(["--checkpoint", str(final), "--out", str(card_dir)])
    card = (card_dir / "MODEL_CARD.md").read_text()
    assert "The average of 2 runs" in card and "run seeds 0, 1" in card
    assert "each kept its last epoch (averaged weights)" in card
    assert "The figures are one training run's" not in card
    # Calibrated by this command's settings, whichever member comes first (members may have been recalibrated).
    swapped = ensemble.main([*map(str, reversed(two_runs)), "--out", str(tmp_path / "swapped"), "--unsure-rate", "0.3"])
    assert load_checkpoint(swapped)["meta"]["flags"]["unsure_rate"] == 0.3
    # An average already in --out is replaced only when asked, and never by overwriting one of its own members.
    with pytest.raises(SystemExit, match=r"already holds a training run .*: write into another --out, or replace it"):
        ensemble.main([*map(str, two_runs), "--out", str(tmp_path / "swapped")])
    for overwrite in ([], ["--overwrite"]):  # without it, it had been told to add --overwrite, then refused
        with pytest.raises(SystemExit, match="a member is part of the model in .*, which the average would replace"):
            ensemble.main([str(two_runs[0]), str(swapped), "--out", str(tmp_path / "swapped"), *overwrite])
    again = ensemble.main([*map(str, two_runs), "--out", str(tmp_path / "swapped"), "--overwrite"])
    assert load_checkpoint(again)["meta"]["flags"]["unsure_rate"] == 0.1
    with pytest.raises(SystemExit, match="give it one of the ensemble's runs"):  # it compares one network's layers
        ood_bench.main(["--checkpoint", str(final)])
    # Runs trained on another machine: their data where it lies here, found by the names of its images.
    moved = class_tree.rename(tmp_path / "moved")
    with pytest.raises(UsageError, match="does not exist; if the data has moved, name its folders where they are now"):
        ensemble.main([*map(str, two_runs), "--out", str(tmp_path / "here")])
    here = ensemble.main([*map(str, two_runs), "--out", str(tmp_path / "here"), "--data", str(moved)])
    assert load_checkpoint(here)["calibration"] == ckpt["calibration"]
    assert load_checkpoint(here)["meta"]["data"] == [str(moved)]


def test_ensemble_refuses_runs_of_other_recipes_or_the_same_run_twice(two_runs, class_tree, tmp_path):
    other = train.main(["--data", str(class_tree), "--out", str(tmp_path / "other"), *FAST, "--label-smoothing", "0"])
    with pytest.raises(SystemExit, match="--label-smoothing 0.0 vs 0.05"):
        ensemble.main([str(two_runs[0]), str(other), "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="listed twice"):
        ensemble.main([str(two_runs[0]), str(two_runs[0]), "--out", str(tmp_path / "bad")])
    again = train.main(["--data", str(class_tree), "--out", str(tmp_path / "again"), "--run-seed", "0", *FAST])
    with pytest.raises(SystemExit, match=r"listed twice \(run seeds \[0, 0\]\)"):  # another file, the same run
        ensemble.main([str(two_runs[0]), str(again), "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit):  # argparse: at least two members
        ensemble.main([str(two_runs[0])])
    regrouped = load_checkpoint(two_runs[1])  # the same flags, but trained after the splitting code changed
    regrouped["meta"]["split_sha256"] = {**regrouped["meta"]["split_sha256"], "val": "0" * 64}
    save_checkpoint(tmp_path / "regrouped.pt", regrouped)
    with pytest.raises(SystemExit, match="member 2 was trained on another split than member 1"):
        ensemble.main([str(two_runs[0]), str(tmp_path / "regrouped.pt"), "--out", str(tmp_path / "bad")])
    renamed = tmp_path / "renamed"  # other photos: no image of the runs' validation or test split by its name
    for photo in class_tree.rglob("*.png"):
        (renamed / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, renamed / photo.parent.name / f"x{photo.name}")
    with pytest.raises(SystemExit, match=f"--data {renamed}: not the folders the runs were trained on"):
        ensemble.main([*map(str, two_runs), "--out", str(tmp_path / "bad"), "--data", str(renamed)])
    assert not (tmp_path / "bad").exists()


def test_a_run_from_before_a_flag_existed_counts_as_trained_with_its_default(two_runs, tmp_path, monkeypatch):
    """Runs trained before a flag was added do not record it; they did what its default does. Runs that recorded
    their data folders as typed (before December 6, 2026) are of the same folders as runs that recorded full paths."""
    older = load_checkpoint(two_runs[1])
    del older["meta"]["flags"]["zoom_out_p"]  # default 0.0, as both runs were trained
    data = Path(older["meta"]["flags"]["data"][0])
    older["meta"]["flags"]["data"] = [data.name]  # typed relative to its folder
    save_checkpoint(tmp_path / "older.pt", older)
    monkeypatch.chdir(data.parent)
    both = load_checkpoint(ensemble.main([str(two_runs[0]), str(tmp_path / "older.pt"), "--out", str(tmp_path / "both")]))
    assert both["members"] == 2 and both["meta"]["data"] == [str(data)]
    older["meta"]["flags"]["marks_p"] = 0.5  # but a flag it does record must still match
    save_checkpoint(tmp_path / "marked.pt", older)
    with pytest.raises(SystemExit, match="--marks-p 0.5 vs 0.0"):
        ensemble.main([str(two_runs[0]), str(tmp_path / "marked.pt"), "--out", str(tmp_path / "bad")])


def test_runs_fine_tuned_from_one_model_average_into_a_model_that_carries_on_its_record(two_runs, tmp_path):
    """Two runs fine-tuned from one parent (--start-from): their average names the parent and counts every photo
    the parent had seen, and an average is refused as a parent (fine-tune one of its runs instead)."""
    parent, other_run = two_runs
    new_photos = tmp_path / "new"  # photos the parent has not seen
    for label in ("vascular", "nevus", "other"):
        for i in range(10):
            write_rgb(new_photos / label / f"{i}.png", spot_photo(label, size=96, radius=9 + i, seed=300 + i))
    tuned = [train.main(["--data", str(new_photos), "--out", str(tmp_path / f"tuned{seed}"), "--run-seed", str(seed),
                         "--start-from", str(parent), *FAST]) for seed in (0, 1)]
    both = load_checkpoint(ensemble.main([*map(str, tuned), "--out", str(tmp_path / "both")]))["meta"]
    assert both["started_from"] == load_checkpoint(tuned[0])["meta"]["started_from"]
    assert set(load_checkpoint(parent)["meta"]["seen_images"]) <= set(both["seen_images"])
    average = ensemble.main([str(parent), str(other_run), "--out", str(tmp_path / "average")])
    with pytest.raises(SystemExit, match="is an average of 2 runs"):
        train.main(["--data", str(new_photos), "--out", str(tmp_path / "refused"), "--start-from", str(average), *FAST])
