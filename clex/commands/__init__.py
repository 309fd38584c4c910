"""The command-line entry points. ``experiments/run.py``, ``sweeps/run.py`` and ``analysis/*.py`` are thin
files that call these, and pyproject.toml installs them as ``clex-run``, ``clex-sweep``, ``clex-collect``,
``clex-compare``, ``clex-figures``, ``clex-scaling-law`` and ``clex-miniature-report``."""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
# shipped inside the package (package data), so an installed wheel finds them wherever it runs
CONFIG_DIR = PACKAGE / "configs"
SWEEP_DIR = PACKAGE / "sweeps" / "configs"
