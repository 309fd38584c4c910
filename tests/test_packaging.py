"""pyproject.toml and environment.yml list the same packages; the README's commands are what CI runs."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def names(requirements):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_pyproject_and_environment_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == wanted
    assert "python=3.11" in env["dependencies"]
    assert names(pip) >= {
        "torch",
        "lightning",
        "torchdiffeq",
        "transformers",
        "optuna",
        "tensorboard",
        "omegaconf",
        "matplotlib",
    }


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    test_command = ci[-1].strip()
    assert test_command in readme
    assert "pip install torch==2.13.0" in readme and any("torch==2.13.0" in line for line in ci)
