"""bench/bench.py, the speed and memory benchmark: a quick run goes through to its table (it had crashed after all its
measurements on a renamed constant, and written none)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import needs_shared

ROOT = Path(__file__).resolve().parents[1]


@needs_shared
def test_a_quick_benchmark_run_writes_its_table(tmp_path):
    out = tmp_path / "results.md"
    run = subprocess.run([sys.executable, "bench/bench.py", "--limit", "24", "--latency-images", "4", "--skip-ui",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert "`python bench/bench.py --limit 24`" in table
    for row in ("batch scoring `score_folder`, 24 files", "peak RSS of batch scoring, 24 / 24 files",
                "single image, model only (`classify`), p50 / p95", "Ceiling: read + decode + frame + resize only"):
        assert row in table, row
    assert "bench/results.md" not in run.stderr  # the committed table is left as it is
