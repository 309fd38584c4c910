"""One experiment: config -> corpus, model, strategy -> (cached) base pre-training -> fine-tuning with
Lightning -> perplexity against length -> runs/<name>/results.json. Shared by experiments/run.py and
the sweeps, which call ``run_experiment`` in-process."""

import functools
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from clex import io
from clex.checkpoints.config_json import official_clex
from clex.checkpoints.pretrained import load_strategy_weights
from clex.config.compose import eval_lengths, reference_length, validate
from clex.config.cost import check_cost
from clex.config.identity import base_key, stage_one_section, training_identity
from clex.data.module import LongContextData
from clex.errors import ConfigError, require, warn
from clex.eval.perplexity import key_token_options
from clex.models import build_model, checkpoint_dir
from clex.models.hf import check_checkpoint
from clex.rope.patch import patch_model, rotary_settings
from clex.rope.strategies import build_strategy
from clex.train import distributed
from clex.train.callbacks import TrainingDiverged
from clex.train.results import write_results
from clex.train.resume import drop_optimizer_state, starting_point
from clex.train.run_folder import check_folder, check_writable, finished_results, run_lock, run_name
from clex.train.stages import Trained, fine_tune, make_trainer, pretrain_base, set_numerics

__all__ = ["Prepared", "SharedData", "TrainingDiverged", "prepare", "run_experiment", "run_name"]
log = logging.getLogger("clex")


@dataclass
class Prepared:
    data: LongContextData
    model: torch.nn.Module  # or, checked without weights (model=hf), its transformers config
    rope_strategy: torch.nn.Module
    eval_lengths: list  # resolved once: exactly the lengths asked for
    original_length: int
    reference_length: int  # the extrapolation length's reference (config.compose.reference_length)

    @property
    def tokenizer(self):
        return self.data.tokenizer

    @property
    def corpus(self):
        return self.data.corpus


def strategy_options(strategy_cfg) -> dict:
    """The strategy section without its name: the strategy's own options."""
    return {k: v for k, v in OmegaConf.to_container(strategy_cfg).items() if k != "name"}


def rotary_options(attention_cfg) -> dict:
    """What the rotary patch takes from the attention section (log-scaled attention)."""
    return {
        "log_scale": bool(attention_cfg.get("log_scale")),
        "log_scale_clamp": bool(attention_cfg.get("log_scale_clamp", True)),
        "log_scale_train": attention_cfg.get("log_scale_train") is not False,  # null: as log_scale
    }


def check_config(cfg):
    """Every check that needs no model or data: the config's own (config.compose.validate), the trainer section's
    by its owner (it asks Lightning which keywords exist and torch which accelerators), then the cost estimate."""
    validate(cfg)
    distributed.check_trainer(OmegaConf.to_container(cfg.trainer))
    check_cost(cfg, max(eval_lengths(cfg)))  # last: every value it reads is checked


def prepare(cfg, load_weights: bool = True, data: LongContextData | None = None) -> Prepared:
    """Everything that can reject the config, before anything is written. ``load_weights=False``
    checks a pretrained model's config only (a comma list is checked whole before its first run).
    ``data``: this config's data, already read (the runs of one command share it; see LongContextData.key)."""
    check_config(cfg)
    check_writable(Path(cfg.out_dir))
    data = data or LongContextData.from_config(cfg.data, cfg.model, Path(cfg.out_dir) / ".tokenizers")
    lengths = eval_lengths(cfg)
    if cfg.eval.get("documents") == "longest":  # refused now, not after training
        from clex.eval.perplexity import long_enough

        require(
            bool(long_enough(data.encoded("test"), max(lengths))),
            "eval.documents",
            f"=longest needs test documents of more than {max(lengths)} tokens (the longest evaluation length) "
            "and the test split has none; evaluate shorter lengths or drop eval.documents, got",
            "longest",
        )
    if cfg.model.name == "hf":
        check_checkpoint(checkpoint_dir(cfg.model))
    keys = key_token_options(cfg.eval)
    if keys is not None:  # refused now, not after training
        evaluator = Path(str(keys["evaluator"]))
        require(
            (evaluator / "config.json").is_file(),
            "eval.key_tokens.evaluator",
            "must be a checkpoint folder with a config.json (a finished run's model/, or a save_pretrained folder)",
            str(evaluator),
        )
    torch.manual_seed(cfg.seed)  # the initial weights (model and ODE) depend on the seed only
    weights = load_weights or cfg.model.name != "hf"
    model = build_model(cfg.model, data.tokenizer) if weights else checkpoint_config(cfg.model)
    rope_strategy = build_rotary_strategy(cfg.strategy, cfg.model, model)
    warn_unexercised(cfg, rope_strategy.original_length, lengths)
    L0 = rope_strategy.original_length
    return Prepared(data, model, rope_strategy, lengths, L0, reference_length(cfg, lengths, L0))


class SharedData:
    """The data of one process's runs: each corpus and tokenizer (``LongContextData.key``) read and tokenised
    once. ``keep``: how many it holds, the oldest dropped first (a sweep worker keeps 1; None, a command's list:
    all)."""

    def __init__(self, keep: int | None = None):
        self.keep, self._data = keep, {}

    def prepare(self, cfg, load_weights: bool = True) -> Prepared:
        key = LongContextData.key(cfg)
        prepared = prepare(cfg, load_weights, data=self._data.get(key))  # a refused config keeps the cache
        self._data.pop(key, None)
        self._data[key] = prepared.data  # the newest last
        while self.keep and len(self._data) > self.keep:
            self._data.pop(next(iter(self._data)))  # the oldest
        return prepared

    def of(self, cfg) -> LongContextData | None:
        return self._data.get(LongContextData.key(cfg))


def checkpoint_config(model_cfg):
    """A checkpoint's transformers config, without its weights (a released CLEX one's as plain transformers)."""
    from transformers import AutoConfig

    from clex.checkpoints.official import transformers_config

    try:
        official = official_clex(checkpoint_dir(model_cfg))
        if official:
            return transformers_config(official)
        return AutoConfig.from_pretrained(checkpoint_dir(model_cfg), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model.path: {model_cfg.path} has no config.json transformers can read: "
            f"{' '.join(str(error).split())[:200]}"
        ) from None


def warn_unexercised(cfg, original_length: int, lengths: list[int]):
    """A strategy acts past L0 only: training or evaluating below it measures plain RoPE (t = 1)."""
    if cfg.strategy.name == "rope":
        return
    if cfg.train.length < original_length and cfg.strategy.get("eval_scale") != "static":
        warn(
            f"train.length {cfg.train.length} is below the model's L0 {original_length}: training runs at t = 1 "
            f"and teaches the strategy nothing; set train.length={original_length} (and eval lengths beyond it)"
        )
    if max(lengths) <= original_length and cfg.strategy.get("eval_scale") != "static":
        warn(
            f"every evaluation length is within L0 = {original_length}, where the strategy is plain RoPE: the "
            "table and its extrapolation length say nothing about extension; evaluate past L0 (e.g. "
            f"'eval.lengths=[{original_length},{2 * original_length},{4 * original_length}]')"
        )


def build_rotary_strategy(strategy_cfg, model_cfg, model):
    """The configured rope strategy for ``model`` (or its config): rotary_dim and base from the model,
    L0 from ``model.original_length`` when set, else from the model."""
    settings = rotary_settings(model)
    if model_cfg.get("original_length"):
        settings["original_length"] = int(model_cfg.original_length)
    rope_strategy = build_strategy(strategy_cfg.name, **settings, **strategy_options(strategy_cfg))
    if model_cfg.name != "hf" or not isinstance(model, torch.nn.Module):
        return rope_strategy
    official = official_clex(model_cfg.path)
    if official is not None:  # a released CLEX checkpoint: its ODE weights
        from clex.checkpoints.official import load_ode

        return load_ode(rope_strategy, model_cfg.path, official)
    return load_strategy_weights(rope_strategy, model_cfg.path)  # a run's saved model: its strategy's weights


def build_patched_model(cfg, tokenizer):
    """A fresh model with the configured strategy patched in (same structure as the trained one)."""
    model = build_model(cfg.model, tokenizer)
    return patch_model(model, build_rotary_strategy(cfg.strategy, cfg.model, model), **rotary_options(cfg.attention))


def run_experiment(
    cfg: DictConfig, prepared: Prepared | None = None, callbacks=(), wait: bool = False, data=None
) -> dict | None:
    """Train and evaluate one configuration; returns the results written to results.json (None on
    ranks other than 0 under DDP). ``callbacks``: extra Lightning callbacks for the fine-tuning stage
    (e.g. a sweep's pruning). ``wait``: wait for a run folder that another process holds (sweeps
    sharing runs), then reuse its result, instead of refusing. ``data``: this config's data, already read."""
    run_dir = Path(cfg.out_dir) / run_name(cfg)
    finished = finished_results(cfg, run_dir)
    if finished is not None:
        log.info("reusing the finished run %s (resume=false runs it again)", run_dir)
        return finished
    prepared = prepared or prepare(cfg, data=data)
    trains = f"L = {cfg.train.length} (fine-tuning)" if cfg.train.steps else "no fine-tuning (train.steps=0)"
    log.info(
        "run %s: strategy %s, L0 = %d (the base model's length), %s; evaluated at %s tokens, the extrapolation "
        "length measured from %d",
        run_dir.name,
        cfg.strategy.name,
        prepared.original_length,
        trains,
        ", ".join(map(str, prepared.eval_lengths)),
        prepared.reference_length,
    )
    created = not run_dir.exists()
    try:
        with run_lock(run_dir, wait):
            finished = finished_results(cfg, run_dir)  # another process may have finished it meanwhile
            if finished is not None:
                return finished
            check_folder(cfg, run_dir)
            started = time.time()
            io.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            set_numerics(cfg)
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            base = None
            if cfg.model.name != "hf" and cfg.base.steps > 0:
                cache = Path(cfg.out_dir) / ".base" / base_key(cfg, prepared.corpus.fingerprint)
                rebuild = functools.partial(build_model, cfg.model, prepared.tokenizer)
                base = pretrain_base(prepared, cache, stage_one_section(cfg), cfg.trainer, cfg.seed, rebuild)
            patch_model(prepared.model, prepared.rope_strategy, **rotary_options(cfg.attention))
            trained = stage_two(cfg, prepared, run_dir, callbacks)
            if not trained.trainer.is_global_zero:
                return None  # DDP: rank 0 evaluates and writes
            results = write_results(cfg, prepared, run_dir, trained, base, started)
            if not cfg.train.get("keep_optimizer_state", False):
                drop_optimizer_state(run_dir / "checkpoints" / "last.ckpt")
            return results
    except io.Busy as error:
        raise ConfigError(str(error)) from None
    except (OSError, RuntimeError) as error:
        message = io.write_failure(error, run_dir)
        discard_unfinished(run_dir, created)
        if message is None:
            raise
        raise ConfigError(message) from None
    except BaseException:  # refused or interrupted before anything worth keeping: no config.yaml left behind
        discard_unfinished(run_dir, created)
        raise


def stage_two(cfg, prepared, run_dir: Path, callbacks) -> Trained:
    """Fine-tuning at L from where this run (or a trained twin) stopped; train.steps=0: the model as it is."""
    if cfg.train.steps == 0:  # evaluate as it is (a released checkpoint, or the base with the strategy)
        log.info("stage 2: train.steps=0, no fine-tuning: evaluating the model as it is")
        return Trained(make_trainer(cfg.trainer, 1, run_dir), 0.0, 0)
    identity = training_identity(OmegaConf.to_container(cfg, resolve=True))
    start = starting_point(run_dir, cfg.resume, Path(cfg.out_dir), identity, cfg.train.steps)
    return fine_tune(  # under FSDP the trained weights are gathered into a model built afresh
        prepared,
        run_dir,
        cfg.train,
        cfg.sampler,
        cfg.trainer,
        cfg.seed,
        start,
        callbacks,
        rebuild=lambda: build_patched_model(cfg, prepared.tokenizer),
    )


def discard_unfinished(run_dir: Path, created: bool):
    """The folder this run created, when it holds nothing worth keeping (no checkpoint, no results)."""
    if created and not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
