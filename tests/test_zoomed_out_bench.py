"""bench.zoomed_out: the pictures it makes and what it counts (checked with a stand-in predictor)."""
from __future__ import annotations

import numpy as np

from bench.zoomed_out import pictures, scores
from model.predictor import Prediction, Prepared
from tests.conftest import spot_photo


class Scripted:
    """A stand-in predictor that gives each picture a scripted (label, argmax) and records the boxes asked for."""

    def __init__(self, answers: list[tuple[str, str]]):
        self.answers, self.boxes = answers, []

    def prepare(self, image: np.ndarray, box=None) -> Prepared:
        self.boxes.append(box)
        return Prepared(np.zeros((3, 4, 4), np.float32), image, None, problem="blurred")  # the bench drops it

    def classify(self, batch: list[Prepared]) -> list[Prediction]:
        answers, self.answers = self.answers[: len(batch)], self.answers[len(batch):]
        return [Prediction(label, "", {c: float(c == top) for c in ("vascular", "nevus", "other")}, 1.0,
                           np.zeros((4, 4)), p.square, p.framing, p.problem, False)
                for (label, top), p in zip(answers, batch)]


def test_scores_count_the_argmax_and_the_rule_separately():
    images = [np.zeros((40, 40, 3), np.uint8)] * 6
    targets = np.array([0, 0, 1, 1, 2, 2])  # vascular, nevus, other
    answers = [("vascular", "vascular"), ("unsure", "vascular"), ("nevus", "nevus"), ("vascular", "vascular"),
               ("unsure", "other"), ("other", "other")]
    row = scores(Scripted(list(answers)), images, targets, "framed")
    assert row["vascular recall"] == 1.0  # by argmax, whatever the rule said
    assert np.isclose(row["balanced accuracy"], (1 + 0.5 + 1) / 3)
    assert np.isclose(row["answered"], 4 / 6)  # the photo problem is dropped: only the rule says unsure
    assert np.isclose(row["non-vascular called vascular"], 1 / 4)


def test_whole_picture_mode_hands_over_the_whole_picture():
    framed, whole = Scripted([("other", "other")] * 2), Scripted([("other", "other")] * 2)
    images = [np.zeros((30, 50, 3), np.uint8)] * 2
    scores(framed, images, np.array([1, 2]), "framed")
    scores(whole, images, np.array([1, 2]), "whole picture")
    assert framed.boxes == [None, None] and whole.boxes == [(0, 0, 50, 30)] * 2


def test_pictures_shrink_the_spot_the_same_way_for_every_model():
    squares = [spot_photo("vascular", size=120, radius=30, seed=i) for i in range(3)]
    assert pictures(squares, 1.0) is squares
    small = pictures(squares, 0.25)
    assert all(np.array_equal(a, b) for a, b in zip(small, pictures(squares, 0.25)))  # seeded per image
    red = lambda im: (im[..., 0].astype(int) - im[..., 1] > 60).sum()
    assert all(red(s) < 0.2 * red(q) for s, q in zip(small, squares))


def test_the_table_is_kept_with_its_command_only_when_asked(tmp_path, capsys):
    import bench.zoomed_out as bench
    from bench.compare import parse_models, publish

    results = tmp_path / "table.md"
    for argv in (["--checkpoints", "runs/a/spotcheck.pt", "b.pt", "--names", "a", "b"],
                 ["--checkpoints", "runs/a/spotcheck.pt", "--write"]):
        args, names = parse_models("python -m bench.zoomed_out", bench.__doc__, results, argv)
        publish(["| a table |"], title="Title", module="bench.zoomed_out", doc=bench.__doc__, results=results,
                args=args, names=names)
        assert "| a table |" in capsys.readouterr().out
        assert results.is_file() == ("--write" in argv)
    text = results.read_text()
    assert "\n- `python -m bench.zoomed_out --checkpoints runs/a/spotcheck.pt --names a --write`\n" in text
    assert "Caveat:" in text and text.endswith("| a table |\n")  # the docstring's body, then the table


def test_writing_a_table_keeps_the_rows_of_models_the_run_does_not_name(tmp_path):
    import bench.zoomed_out as bench
    from bench.compare import parse_models, publish

    results = tmp_path / "table.md"
    header = ["| model | figure |", "|---|---|"]

    def run(rows: list[str], *names: str, columns: list[str] = header) -> str:
        argv = ["--checkpoints", *(f"runs/{n}/spotcheck.pt" for n in names), "--names", *names, "--write"]
        args, names = parse_models("python -m bench.zoomed_out", bench.__doc__, results, argv)
        publish(columns + rows, title="Title", module="bench.zoomed_out", doc=bench.__doc__, results=results,
                args=args, names=names)
        return results.read_text()

    run(["| a | 1 |", "| b | 2 |"], "a", "b")
    text = run(["| c | 3 |"], "c")
    assert text.endswith("|---|---|\n| a | 1 |\n| b | 2 |\n| c | 3 |\n")  # kept, then the new run's rows
    assert "--names a b --write`\n- `python" in text and "--names c --write`" in text  # both commands, in order
    text = run(["| a | 9 |"], "a")
    assert text.endswith("| b | 2 |\n| c | 3 |\n| a | 9 |\n") and "| a | 1 |" not in text  # a's rows replaced
    assert text.count("`python -m") == 3  # the first command still made b's rows
    text = run(["| b | 8 |", "| c | 7 |"], "b", "c")
    assert "--names a b --write" not in text and text.count("`python -m") == 2  # nothing of that run is left
    text = run(["| d | 4 | x |"], "d", columns=["| model | figure | more |", "|---|---|---|"])
    assert text.endswith("|---|---|---|\n| d | 4 | x |\n") and text.count("`python -m") == 1  # other columns
