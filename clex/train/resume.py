"""Where stage 2 starts: this run's newest checkpoint (ours, or the one Lightning writes when SLURM pre-empts the
job), else a finished twin's fine-tuned model (same training, other evaluation), else step 0; and what a finished
run keeps of its checkpoint."""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from clex import io
from clex.config.identity import training_identity
from clex.errors import ConfigError, warn

log = logging.getLogger("clex")


def checkpoint_step(path: Path) -> int:
    """The global step of a Lightning checkpoint: a file, or a directory (FSDP's sharded format)."""
    meta = path / "meta.pt" if path.is_dir() else path
    if path.is_dir():
        io.check_sharded_checkpoint(path, "resume=false deletes it and starts this run over")
    checkpoint = io.load_tensors(meta, "a checkpoint", "resume=false deletes it and starts this run over")
    try:
        return int(checkpoint["global_step"])
    except (TypeError, KeyError, ValueError):
        raise ConfigError(
            f"{meta} is not a Lightning checkpoint (no global_step); resume=false deletes it and starts this run over"
        ) from None


@dataclass
class Start:
    """Where stage 2 begins: the checkpoint to resume (or, for a trained twin, to reuse), its step, and the
    twin's ``train`` results."""

    checkpoint: str | None = None
    done_steps: int = 0
    twin: dict | None = None


def trained_twin(out_dir: Path, identity: dict, steps: int, run_dir: Path) -> tuple[Path, dict] | None:
    """A finished run in out_dir whose training identity is ``identity`` (this config but its ``eval``), with its
    last.ckpt at the last step, and its results' ``train`` section: a run that only scores differently (another
    protocol, eval=ruler) reuses its fine-tuned model instead of training it again."""
    for saved in sorted(out_dir.glob("*/results.json")):
        checkpoint = saved.parent / "checkpoints" / "last.ckpt"
        if saved.parent == run_dir or not checkpoint.is_file():
            continue
        try:
            results = json.loads(io.read_limited(saved, "results.json"))
        except (OSError, ValueError, RecursionError):
            results = None
        if not (isinstance(results, dict) and isinstance(results.get("config"), dict)):
            warn(f"{saved} is not a clex results.json; skipped when looking for a trained twin")
            continue
        if training_identity(results["config"]) == identity and checkpoint_step(checkpoint) == steps:
            return saved.parent, {**results["train"], "reused_from": saved.parent.name}
    return None


def resume_point(run_dir: Path, resume: bool) -> tuple[str | None, int]:
    """The newest of our last.ckpt and the checkpoint Lightning writes when SLURM pre-empts the job,
    and its step; resume=false deletes them and starts over."""
    saved = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.exists()]
    if saved and not resume:
        for path in [run_dir / "checkpoints", *run_dir.glob("hpc_ckpt_*.ckpt")]:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return None, 0
    if not saved:
        return None, 0
    steps = {p: checkpoint_step(p) for p in saved}
    newest = max(steps, key=steps.get)
    log.info("stage 2: resuming %s from step %d (%s)", run_dir.name, steps[newest], newest.name)
    return str(newest), steps[newest]


def starting_point(run_dir: Path, resume: bool, out_dir: Path, identity: dict, steps: int) -> Start:
    """Stage 2's start: this run's newest checkpoint, else (resume=true) a finished twin's model, else step 0."""
    checkpoint, done_steps = resume_point(run_dir, resume)
    twin = trained_twin(out_dir, identity, steps, run_dir) if checkpoint is None and resume else None
    if twin is None:
        return Start(checkpoint, done_steps)
    log.info("stage 2: %s has this config but eval: its fine-tuned model is reused, nothing to train", twin[0])
    return Start(str(twin[0] / "checkpoints" / "last.ckpt"), steps, twin[1])


def restore_trained(module, checkpoint: str):
    """A fine-tuned checkpoint's weights and training time into the module, without Lightning's resume
    (a finished run's last.ckpt has dropped its optimiser state unless train.keep_optimizer_state)."""
    state = io.load_tensors(checkpoint, "a fine-tuned checkpoint", "rerun with resume=false to train again")
    module.load_state_dict(state["state_dict"])
    module.on_load_checkpoint(state)


def drop_optimizer_state(checkpoint: Path):
    """A finished run keeps its weights, not the optimiser's moments (twice the model again), atomically."""
    if not checkpoint.is_file():  # FSDP's sharded checkpoints (folders) are kept whole
        return
    state = io.load_tensors(checkpoint, "a fine-tuned checkpoint", "rerun with resume=false to train again")
    if state.pop("optimizer_states", None) is not None:
        io.atomic_write(checkpoint, lambda handle: torch.save(state, handle))
