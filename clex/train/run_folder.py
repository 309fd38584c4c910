"""A run's folder, out_dir/<name>: its name (from the run's identity), the finished run it may already hold, the
lock its run holds, and the checks made before anything is written into it."""

import contextlib
import json
import os
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from clex import io
from clex.config.identity import identity_hash, run_identity
from clex.errors import ConfigError, require


def run_name(cfg) -> str:
    if cfg.name:
        return str(cfg.name)
    content = run_identity(OmegaConf.to_container(cfg, resolve=True))
    return f"{cfg.choices.strategy}-{cfg.choices.model}-L{cfg.train.length}-{identity_hash(content)}"


def finished_results(cfg, run_dir: Path) -> dict | None:
    """A finished run of this exact config (rerunning a comma list skips what is done)."""
    path = run_dir / "results.json"
    if not (cfg.resume and path.is_file()):
        return None
    try:
        results = json.loads(io.read_limited(path, "results.json"))
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(results, dict) and isinstance(results.get("config"), dict)):
        return None
    same = run_identity(results["config"]) == run_identity(OmegaConf.to_container(cfg, resolve=True))
    return results if same else None


def run_lock(run_dir: Path, wait: bool):
    """Rank 0 holds the run folder while it runs (the ranks Lightning or srun starts share it)."""
    if not io.is_rank_zero():
        return contextlib.nullcontext()
    return io.exclusive(run_dir / ".lock", f"run folder {run_dir}", wait=wait)


def check_folder(cfg, run_dir: Path):
    """A folder that holds another config's run (``name=`` reused) is not resumed into this one."""
    saved = run_dir / "config.yaml"
    if saved.is_file() and cfg.resume:
        try:
            config = OmegaConf.to_container(OmegaConf.load(saved))
            if not isinstance(config, dict):
                raise ValueError(f"a YAML {type(config).__name__}, not a mapping")
        except (OSError, ValueError, yaml.YAMLError) as error:  # cut short, or a tag (never constructed)
            raise ConfigError(
                f"{saved} is damaged ({' '.join(str(error).split())[:160]}), so this folder cannot be checked to "
                "hold this config; restore it, give another name=, or resume=false to replace the run"
            ) from None
        if run_identity(config) != run_identity(OmegaConf.to_container(cfg, resolve=True)):
            raise ConfigError(
                f"{run_dir} holds a run of another config (its config.yaml differs); give another "
                "name=, or resume=false to replace it"
            )


def check_writable(out_dir: Path):
    """out_dir must be (or be creatable as) a folder this process can write in: not a file, not under a
    read-only mount or /proc. Checked without writing anything: the nearest existing folder's permissions."""
    existing = out_dir.resolve()
    while not existing.exists():
        existing = existing.parent
    writable = (
        existing.is_dir() and os.access(existing, os.W_OK | os.X_OK) and not str(existing).startswith(("/proc", "/sys"))
    )  # pseudo filesystems
    if writable:
        writable = os.statvfs(existing).f_flag & os.ST_RDONLY == 0
    require(writable, "out_dir", f"must be a folder this process can write in ({existing} is not)", str(out_dir))
