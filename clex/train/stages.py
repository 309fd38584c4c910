"""Training: the Lightning Trainer, stage 1 (plain RoPE at L0, cached and shared by every strategy of a
seed) and stage 2 (fine-tuning with the strategy, resumable from its newest checkpoint)."""

import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from clex import io
from clex.data.module import FitWindows
from clex.rope.patch import patch_model, rotary_settings
from clex.rope.strategies import build_strategy
from clex.train import distributed
from clex.train.callbacks import Interruption, ProgressLine, StderrProgressBar, StopOnNonFinite, signals_said
from clex.train.module import LongContextLM
from clex.train.resume import Start, restore_trained

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
    callbacks.append(Interruption(stage, root / "checkpoints" if checkpoints else None))
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


def optimiser_settings(section, ode_lr=None):
    """What LongContextLM.configure_optimizers reads, for either stage (``base`` or ``train``): ``warmup_ratio``,
    where set, is the warm-up as a fraction of the steps (the official recipe's 3%) in place of ``warmup_steps``;
    ``min_lr_ratio`` (null: 0.1) is where the cosine ends, a fraction of the peak learning rate."""
    ratio, floor = section.get("warmup_ratio"), section.get("min_lr_ratio")
    return OmegaConf.create(
        {
            "lr": section.lr,
            "ode_lr": ode_lr,
            "weight_decay": section.get("weight_decay", 0.1),
            "betas": section.get("betas", [0.9, 0.95]),
            "warmup_steps": section.warmup_steps if ratio is None else round(ratio * section.steps),
            "steps": section.steps,
            "min_lr_ratio": 0.1 if floor is None else floor,
        }
    )


def pretrain_base(prepared, root: Path, base, trainer_cfg, seed: int, rebuild) -> dict:
    """Stage 1: plain RoPE at L0, cached in ``root`` (out_dir/.base/<identity.base_key>) and reused. ``base``: the
    stage's section with its optimiser defaults (identity.stage_one_section); ``rebuild``: a fresh model of the same
    structure (FSDP gathers the trained weights into it). Two processes that need the same base (parallel sweep
    workers) train it once: the second waits."""
    exclusive = io.exclusive(root / ".lock", f"base model {root}", wait=True)
    with exclusive if io.is_rank_zero() else contextlib.nullcontext():
        return _pretrain_base(prepared, root, base, trainer_cfg, seed, rebuild)


def _pretrain_base(prepared, root: Path, base, trainer_cfg, seed: int, rebuild) -> dict:
    weights, info_path = root / "model.pt", root / "base.json"
    if weights.is_file() and info_path.is_file():
        prepared.model.load_state_dict(
            io.load_tensors(weights, "a cached base model", f"delete {root} to train it again")
        )
        info = json.loads(io.read_limited(info_path, "a cached base model's base.json"))
        log.info("stage 1: reusing the cached base model %s", root)
        return {**info, "cached": True, "path": str(root)}
    L0 = prepared.original_length
    log.info("stage 1: pre-training the base model with plain RoPE at L0=%d for %d steps", L0, base.steps)

    def with_rope(model):
        return patch_model(model, build_strategy("rope", **rotary_settings(model) | {"original_length": L0}))

    with_rope(prepared.model)
    module = LongContextLM(prepared.model, optimiser_settings(base), sampling=None, seed=seed)  # rope samples no t
    start = time.time()
    trainer = make_trainer(trainer_cfg, base.steps, root, grad_clip=base.grad_clip, stage="stage 1")
    windows = FitWindows(L0, base.batch_size, train=base.steps * base.batch_size * trainer.world_size, seed=seed + 1)
    data = prepared.data.for_fit(windows)
    with signals_said():
        trainer.fit(module, datamodule=data)
    if distributed.is_sharded(trainer):  # every rank goes on to stage 2 with the whole base model
        prepared.model = distributed.gather_full_model(prepared.model, lambda: with_rope(rebuild()), every_rank=True)
    info = {
        "steps": base.steps,
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


def fine_tune(
    prepared, run_dir: Path, train, sampling, trainer_cfg, seed: int, start: Start, callbacks=(), rebuild=None
) -> Trained:
    """Stage 2: the patched model trained at L (the ``train`` section) with the rope strategy's t and positions
    drawn by the samplers that ``sampling`` (the config's ``sampler`` section) names, from ``start``
    (starting_point). ``rebuild``: a fresh patched model of the same structure (FSDP gathers the trained weights
    into it)."""
    if train.gradient_checkpointing:  # recompute each layer's activations in the backward pass
        enable_activation_checkpointing(prepared.model)
    module = LongContextLM(
        prepared.model,
        optimiser_settings(train, train.ode_lr),
        sampling,
        seed=seed,
        max_scale=getattr(prepared.rope_strategy, "max_scale", None),
    )
    began = time.time()
    trainer = make_trainer(
        trainer_cfg,
        train.steps,
        run_dir,
        grad_clip=train.grad_clip,
        checkpoints=True,
        save_best=bool(train.get("save_best")),
        val_every=min(train.val_every, train.steps),
        callbacks=callbacks,
    )
    # item i of the training windows is fixed; under DDP each rank takes every world_size-th batch item,
    # so a global batch is the same items whatever the number of processes
    per_step = int(trainer_cfg.get("accumulate_grad_batches", 1)) * trainer.world_size
    if start.checkpoint is not None and start.done_steps >= train.steps and Path(start.checkpoint).is_file():
        restore_trained(module, start.checkpoint)  # trained already: nothing to fit
        tokens = train.steps * train.batch_size * per_step * train.length
        before = 0.0 if start.twin else module.seconds_before  # a twin's training time is the twin's
        return Trained(trainer, module.seconds_before, tokens, start.twin, before)
    done = start.done_steps
    steps = f"the remaining {train.steps - done} of {train.steps} steps" if done else f"{train.steps} steps"
    log.info("stage 2: fine-tuning with %s at L=%d for %s", prepared.rope_strategy.name, train.length, steps)
    data = prepared.data.for_fit(
        FitWindows(
            train.length,
            train.batch_size,
            train=train.steps * train.batch_size * per_step,
            seed=seed + 2,
            validation=train.val_batches * train.batch_size * trainer.world_size,
            start_batch=done * per_step,
        )
    )
    with io.weights_only_loads():  # Lightning's own load of the checkpoint: its tensors, never its code
        with signals_said():
            trainer.fit(module, datamodule=data, ckpt_path=start.checkpoint, weights_only=True)
    if distributed.is_sharded(trainer):  # FSDP: the weights are spread over the ranks
        prepared.model = distributed.gather_full_model(prepared.model, rebuild)
    seconds = module.seconds_before + time.time() - began
    return Trained(trainer, seconds, len(data.train_windows) * train.length, start.twin, module.seconds_before)


def enable_activation_checkpointing(model):
    """Recent transformers 5 releases name it activation_checkpointing_enable (the older name warns it will go)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
