"""Every benchmark runs end to end in its ``--smoke`` mode (tiny sizes, a few steps) and prints its table: a
benchmark whose imports, configs or options moved fails here, not months later in front of a reader."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "common.py")


def test_every_benchmark_is_listed():
    assert set(SCRIPTS) >= {"ode_overhead.py", "long_context.py", "step_time.py", "default_run.py"}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_benchmark_runs_in_smoke_mode(script, tmp_path):
    extra = ["--threads", "1"] if script == "thread_noise.py" else []
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # what a benchmark writes by default lands there, not in the checkout
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) >= 3, done.stdout  # a header, its rule and at least one row
