"""The command-line entry points. ``experiments/run.py``, ``sweeps/run.py`` and ``analysis/*.py`` are thin
files that call these, and pyproject.toml installs them as ``clex-run``, ``clex-sweep``, ``clex-collect``,
``clex-compare``, ``clex-figures``, ``clex-scaling-law`` and ``clex-miniature-report``."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the clone: experiments/configs and sweeps/configs live here
CONFIG_DIR = ROOT / "experiments" / "configs"
