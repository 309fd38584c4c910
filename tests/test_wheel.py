"""A wheel built from the checkout works from a folder outside the clone: its console scripts find the configs and
sweep files inside the package, never in the clone's layout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_run import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_an_installed_wheel_runs_outside_the_clone(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    [wheel] = (tmp_path / "dist").glob("clex-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    # the wheel's clex, not the clone's: PYTHONPATH comes before the editable install of the checkout
    env = {**os.environ, "PYTHONPATH": str(site)}

    def clex(script, *args):
        """The wheel's console script (pip writes it into site/bin, its shebang this interpreter)."""
        done = subprocess.run(
            [str(site / "bin" / script), *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = clex("clex-run", "--cfg", "strategy=pi")
    assert "name: pi" in where
    origin = subprocess.run(
        [sys.executable, "-c", "import clex; print(clex.__file__)"], cwd=work, env=env, capture_output=True, text=True
    ).stdout
    assert origin.startswith(str(site)), origin
    assert "groups" in clex("clex-run", "--help")
    clex("clex-run", "out_dir=runs", *TINY, "base.steps=2", "train.steps=2")
    [result] = [json.loads(p.read_text()) for p in (work / "runs").glob("*/results.json")]
    assert result["eval"][0]["ppl"] > 1
    clex("clex-sweep", "sweep=clex_lambda", "study.n_trials=1", "out_dir=runs", *TINY, "train.steps=2")
    assert "finished" in clex("clex-sweep", "sweep=clex_lambda", "--summary")
    clex("clex-collect", "runs", "--out", "table.csv")
    assert (work / "table.csv").is_file() and (work / "table_summary.csv").is_file()
