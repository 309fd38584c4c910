"""Training: the Lightning Trainer, stage 1 (plain RoPE at L0, cached and shared by every strategy of a
seed) and stage 2 (fine-tuning with the strategy, resumable from its newest checkpoint)."""

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from clex import distributed, io
from clex.callbacks import ProgressLine, StderrProgressBar, StopOnNonFinite
from clex.data.module import FitWindows
from clex.identity import config_hash, training_identity
from clex.lit import LongContextLM
from clex.models import build_model
from clex.registry import ConfigError
from clex.rotary import patch_model, rotary_settings
from clex.strategies import build_strategy

log = logging.getLogger("clex")


def set_numerics(cfg):
    """``threads`` fixes torch's intra-op thread count; ``deterministic`` turns on torch's deterministic
    algorithms (and fixes threads at 1 unless ``threads`` says otherwise)."""
    threads = cfg.get("threads") or (1 if cfg.get("deterministic") else None)
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(bool(cfg.get("deterministic")))


def make_trainer(
    trainer_cfg,
    max_steps: int,
    root: Path,
    grad_clip: float | None = None,
    checkpoints: bool = False,
    save_best: bool = False,
    val_every: int | None = None,
    callbacks=(),
    stage: str = "stage 2",
):
    """A Lightning Trainer from the ``trainer`` section (any Trainer keyword); ``checkpoints``: last.ckpt in
    root/checkpoints at every validation (and best.ckpt when ``save_best``)."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    options = dict(OmegaConf.to_container(trainer_cfg))
    bar = bool(options.pop("enable_progress_bar", True)) and sys.stderr.isatty()  # a log file gets ProgressLine
    callbacks = [StopOnNonFinite(), *callbacks, StderrProgressBar() if bar else ProgressLine(stage)]
    if checkpoints:  # last.ckpt (the latest, at every validation) to resume; the best one on request
        callbacks.append(
            ModelCheckpoint(
                dirpath=root / "checkpoints", filename="last", monitor=None, save_top_k=1, enable_version_counter=False
            )
        )
        if save_best:  # a second full copy, with optimiser state
            callbacks.append(
                ModelCheckpoint(dirpath=root / "checkpoints", filename="best", monitor="val/loss", save_top_k=1)
            )
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if isinstance(options.get("strategy"), dict):  # fsdp / deepspeed
        options["strategy"] = distributed.build_parallel(options)
    options["log_every_n_steps"] = min(options.get("log_every_n_steps", 50), max_steps)  # short runs log too
    # one epoch holds every step's batch (the bar then reads "Epoch 0/0", not "0/-2")
    return L.Trainer(
        max_steps=max_steps,
        max_epochs=1,
        default_root_dir=root,
        logger=TensorBoardLogger(root, name="tensorboard", version=""),
        callbacks=callbacks,
        enable_checkpointing=checkpoints,
        num_sanity_val_steps=0,
        val_check_interval=val_every,
        limit_val_batches=None if val_every else 0,
        gradient_clip_val=grad_clip,
        enable_model_summary=False,
        enable_progress_bar=bar,
        **options,
    )


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


def optimiser_settings(section, ode_lr=None):
    """What LongContextLM.configure_optimizers reads, for either stage (``base`` or ``train``)."""
    return OmegaConf.create(
        {
            "lr": section.lr,
            "ode_lr": ode_lr,
            "weight_decay": section.get("weight_decay", 0.1),
            "betas": section.get("betas", [0.9, 0.95]),
            "warmup_steps": section.warmup_steps,
            "steps": section.steps,
        }
    )


def base_key(cfg, prepared) -> str:
    return config_hash(
        {
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "base": OmegaConf.to_container(cfg.base),
            "data": OmegaConf.to_container(cfg.data),
            "corpus": prepared.corpus.fingerprint,
            "seed": cfg.seed,
            "precision": str(cfg.trainer.get("precision")),
            "version": 1,
            "world": [str(cfg.trainer.get(k)) for k in ("strategy", "devices", "num_nodes")],
        }
    )


def pretrain_base(cfg, prepared) -> dict:
    """Stage 1: plain RoPE at L0, cached under out_dir/.base/<hash of its settings> and reused. Two
    processes that need the same base (parallel sweep workers) train it once: the second waits."""
    root = Path(cfg.out_dir) / ".base" / base_key(cfg, prepared)
    rank_zero = all(os.environ.get(key, "0") == "0" for key in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
    with io.exclusive(root / ".lock", f"base model {root}", wait=True) if rank_zero else contextlib.nullcontext():
        return _pretrain_base(cfg, prepared, root)


def _pretrain_base(cfg, prepared, root: Path) -> dict:
    weights, info_path = root / "model.pt", root / "base.json"
    if weights.is_file() and info_path.is_file():
        prepared.model.load_state_dict(
            io.load_tensors(weights, "a cached base model", f"delete {root} to train it again")
        )
        info = json.loads(info_path.read_text())
        log.info("stage 1: reusing the cached base model %s", root)
        return {**info, "cached": True, "path": str(root)}
    L0, b = prepared.original_length, cfg.base
    log.info("stage 1: pre-training the base model with plain RoPE at L0=%d for %d steps", L0, b.steps)

    def with_rope(model):
        return patch_model(model, build_strategy("rope", **rotary_settings(model) | {"original_length": L0}))

    with_rope(prepared.model)
    optim = optimiser_settings(OmegaConf.merge({"weight_decay": cfg.train.weight_decay, "betas": cfg.train.betas}, b))
    module = LongContextLM(prepared.model, optim, cfg.sampler, seed=cfg.seed)
    start = time.time()
    trainer = make_trainer(cfg.trainer, b.steps, root, grad_clip=cfg.train.grad_clip, stage="stage 1")
    windows = FitWindows(L0, b.batch_size, train=b.steps * b.batch_size * trainer.world_size, seed=cfg.seed + 1)
    data = prepared.data.for_fit(windows)
    trainer.fit(module, datamodule=data)
    if distributed.is_sharded(trainer):  # every rank goes on to stage 2 with the whole base model
        prepared.model = distributed.gather_full_model(
            prepared.model, lambda: with_rope(build_model(cfg.model, prepared.tokenizer)), every_rank=True
        )
    info = {
        "steps": b.steps,
        "original_length": L0,
        "tokens": len(data.train_windows) * L0,
        "wall_seconds": time.time() - start,
        "final_loss": float(trainer.callback_metrics["train/loss"]),
    }
    if trainer.is_global_zero:
        state = {k: v for k, v in prepared.model.state_dict().items() if ".rotary_emb." not in k}
        io.atomic_write(weights, lambda handle: torch.save(state, handle))
        io.write_json(info_path, info)
    return {**info, "cached": False, "path": str(root)}


@dataclass
class Trained:
    trainer: L.Trainer
    seconds: float
    tokens: int
    reused: dict | None = None  # the train section of the run whose fine-tuned model this one reused
    seconds_before: float = 0.0  # training time of this run's earlier invocations (from its checkpoint)


def trained_twin(cfg, run_dir: Path) -> tuple[Path, dict] | None:
    """A finished run in out_dir with this config but its ``eval``, with its last.ckpt at the last step, and
    its results' ``train`` section: a run that only scores differently (another protocol, eval=ruler)
    reuses its fine-tuned model instead of training it again."""
    ours = training_identity(OmegaConf.to_container(cfg, resolve=True))
    for saved in sorted(Path(cfg.out_dir).glob("*/results.json")):
        checkpoint = saved.parent / "checkpoints" / "last.ckpt"
        if saved.parent == run_dir or not checkpoint.is_file():
            continue
        try:
            results = json.loads(saved.read_text())
        except (OSError, ValueError):
            continue
        if training_identity(results.get("config") or {}) == ours and checkpoint_step(checkpoint) == cfg.train.steps:
            return saved.parent, {**results["train"], "reused_from": saved.parent.name}
    return None


def resume_point(cfg, run_dir: Path) -> tuple[str | None, int]:
    """The newest of our last.ckpt and the checkpoint Lightning writes when SLURM pre-empts the job,
    and its step; resume=false deletes them and starts over."""
    saved = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.exists()]
    if saved and not cfg.resume:
        for path in [run_dir / "checkpoints", *run_dir.glob("hpc_ckpt_*.ckpt")]:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return None, 0
    if not saved:
        return None, 0
    steps = {p: checkpoint_step(p) for p in saved}
    newest = max(steps, key=steps.get)
    log.info("stage 2: resuming %s from step %d (%s)", run_dir.name, steps[newest], newest.name)
    return str(newest), steps[newest]


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


def fine_tune(cfg, prepared, run_dir: Path, callbacks=(), rebuild=None) -> Trained:
    """Stage 2: the patched model trained at L with the strategy's sampled t and positions. ``rebuild``: a
    fresh patched model of the same structure (FSDP gathers the trained weights into it)."""
    t = cfg.train
    if t.gradient_checkpointing:  # recompute each layer's activations in the backward pass
        prepared.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module = LongContextLM(
        prepared.model,
        optimiser_settings(t, t.ode_lr),
        cfg.sampler,
        seed=cfg.seed,
        max_scale=getattr(prepared.rope_strategy, "max_scale", None),
    )
    resume_from, done_steps = resume_point(cfg, run_dir)
    twin = trained_twin(cfg, run_dir) if resume_from is None and cfg.resume else None
    if twin:
        log.info("stage 2: %s has this config but eval: its fine-tuned model is reused, nothing to train", twin[0])
        resume_from, done_steps = str(twin[0] / "checkpoints" / "last.ckpt"), t.steps
    start = time.time()
    trainer = make_trainer(
        cfg.trainer,
        t.steps,
        run_dir,
        grad_clip=t.grad_clip,
        checkpoints=True,
        save_best=bool(t.get("save_best")),
        val_every=min(t.val_every, t.steps),
        callbacks=callbacks,
    )
    # item i of the training windows is fixed; under DDP each rank takes every world_size-th batch item,
    # so a global batch is the same items whatever the number of processes
    per_step = int(cfg.trainer.get("accumulate_grad_batches", 1)) * trainer.world_size
    if resume_from is not None and done_steps >= t.steps and Path(resume_from).is_file():
        restore_trained(module, resume_from)  # trained already: nothing to fit
        tokens = t.steps * t.batch_size * per_step * t.length
        before = 0.0 if twin else module.seconds_before  # a twin's training time is the twin's
        return Trained(trainer, module.seconds_before, tokens, twin[1] if twin else None, before)
    steps = f"the remaining {t.steps - done_steps} of {t.steps} steps" if done_steps else f"{t.steps} steps"
    log.info("stage 2: fine-tuning with %s at L=%d for %s", cfg.strategy.name, t.length, steps)
    data = prepared.data.for_fit(
        FitWindows(
            t.length,
            t.batch_size,
            train=t.steps * t.batch_size * per_step,
            seed=cfg.seed + 2,
            validation=t.val_batches * t.batch_size * trainer.world_size,
            start_batch=done_steps * per_step,
        )
    )
    with io.weights_only_loads():  # Lightning's own load of the checkpoint: its tensors, never its code
        trainer.fit(
            module,
            datamodule=data,
            ckpt_path=resume_from,
            weights_only=True,
        )
    if distributed.is_sharded(trainer):  # FSDP: the weights are spread over the ranks
        prepared.model = distributed.gather_full_model(prepared.model, rebuild)
    seconds = module.seconds_before + time.time() - start
    return Trained(
        trainer, seconds, len(data.train_windows) * t.length, twin[1] if twin else None, module.seconds_before
    )
