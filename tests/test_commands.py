"""Every command's own usage line: the command to type, as the README gives it."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.conftest import ROOT

COMMANDS = ["serve.app", "serve.batch", "training.train", "training.evaluate", "training.ensemble", "model.export",
            "data.download", "bench.ablation", "bench.framing_sheet", "bench.heatmap_focus", "bench.ood",
            "bench.shortcuts", "bench.tta", "bench.zoomed_out"]


@pytest.mark.parametrize("module", COMMANDS)
def test_usage_and_errors_name_the_command_to_type(module, capsys):
    """argparse had named the file (`usage: batch.py ...`, `batch.py: error: ...`), which does not run as such: the
    modules import the project's packages, so they run as `python -m serve.batch` from the repository."""
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m {module} ")
    with pytest.raises(SystemExit) as stop:
        main(["--no-such-flag"])
    assert stop.value.code == 2 and f"\npython -m {module}: error: " in capsys.readouterr().err


def test_a_refusal_that_escapes_its_command_is_still_printed():
    """A UsageError exits 2 through a command's entry point (tests/test_training_units.py); raised from a script that
    calls a command's `main` itself, Python prints it and exits 1, as it does any `SystemExit` with a message."""
    done = subprocess.run([sys.executable, "-c", "from data.flags import UsageError; raise UsageError('no --out')"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, "no --out\n")


def test_the_speed_bench_names_itself_as_a_script_and_refuses_a_count_under_one(capsys):
    """bench/bench.py runs as a script; `--latency-images 0` had failed after its start-up with ZeroDivisionError."""
    from bench.bench import main

    with pytest.raises(SystemExit) as stop:
        main(["--latency-images", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith("python bench/bench.py: error: argument --latency-images: must be at "
                                            "least 1, not 0\n")
