"""One experiment: config -> corpus, model, strategy -> (cached) base pre-training -> fine-tuning with
Lightning -> perplexity against length -> runs/<name>/results.json. Shared by experiments/run.py and
the sweeps, which call ``run_experiment`` in-process."""
import hashlib
import importlib.util
import json
import logging
import math
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

import clex
from clex import distributed, io
from clex.config import check_finite, require
from clex.data import RandomWindows, ResumeSampler, evaluation_sequences, load_corpus, packed_tokens
from clex.evaluate import extrapolation_length, sequence_nll
from clex.lit import LongContextLM
from clex.models import build_model, build_tokenizer, checkpoint_dir
from clex.samplers import POSITION_SAMPLERS, SCALE_SAMPLERS

ROTARY_KEYS = ("name", "log_scale")  # strategy config keys that are not strategy options
ATTENTION = ("sdpa", "eager", "flash_attention_2")
log = logging.getLogger("clex")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Prepared:
    tokenizer: object
    corpus: object
    model: torch.nn.Module
    strategy: torch.nn.Module
    eval_lengths: list
    original_length: int


def eval_lengths(cfg) -> list[int]:
    lengths = cfg.eval.lengths if cfg.eval.lengths is not None else [m * cfg.train.length for m in cfg.eval.multipliers]
    for value in lengths:
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                "eval.lengths / eval.multipliers", "must be positive integers", list(lengths))
    return sorted(set(lengths))


def validate(cfg):
    """Checks that need no model or data (those come in ``prepare``)."""
    check_finite(cfg)
    t = cfg.train
    require(isinstance(t.length, int) and t.length >= 2, "train.length", "must be an integer >= 2", t.length)
    for key in ("steps", "batch_size", "val_every", "val_batches"):
        require(t[key] >= 1, f"train.{key}", "must be >= 1", t[key])
    require(cfg.base.steps >= 0, "base.steps", "must be >= 0", cfg.base.steps)
    require(cfg.threads is None or cfg.threads >= 1, "threads", "must be >= 1 or null", cfg.threads)
    require(t.lr > 0, "train.lr", "must be > 0", t.lr)
    require(t.ode_lr is None or t.ode_lr > 0, "train.ode_lr", "must be > 0 or null", t.ode_lr)
    require(cfg.eval.max_tokens >= 1, "eval.max_tokens", "must be >= 1", cfg.eval.max_tokens)
    require(cfg.eval.chunk_size is None or cfg.eval.chunk_size >= 1, "eval.chunk_size", "must be >= 1 or null",
            cfg.eval.chunk_size)
    require(0 < cfg.eval.eps, "eval.eps", "must be > 0", cfg.eval.eps)
    fractions = cfg.data.validation_fraction + cfg.data.test_fraction
    require(0 < cfg.data.validation_fraction and 0 < cfg.data.test_fraction and fractions < 1,
            "data.validation_fraction / data.test_fraction", "must be > 0 and sum to < 1", fractions)
    distributed.check(OmegaConf.to_container(cfg.trainer))
    check_attention(cfg.model.get("attn_implementation", "sdpa"), str(cfg.trainer.get("precision", "32-true")))
    SCALE_SAMPLERS.get(cfg.sampler.scale)
    POSITION_SAMPLERS.get(cfg.sampler.position)
    eval_lengths(cfg)


def check_attention(name: str, precision: str):
    """SDPA (PyTorch picks its flash or memory-efficient kernel on GPUs), eager, or the flash-attn package."""
    require(name in ATTENTION, "model.attn_implementation", f"must be one of {', '.join(ATTENTION)}", name)
    if name == "flash_attention_2":
        require(importlib.util.find_spec("flash_attn") is not None, "model.attn_implementation",
                "flash_attention_2 needs the flash-attn package (and a CUDA GPU), which is not installed", name)
        require(precision.startswith(("bf16", "16")), "trainer.precision",
                "must be 16-bit (bf16-mixed, bf16-true, 16-mixed, 16-true) for flash_attention_2", precision)


def strategy_options(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg.strategy).items() if k not in ROTARY_KEYS}


def prepare(cfg, load_weights: bool = True) -> Prepared:
    """Everything that can reject the config, before anything is written. ``load_weights=False``
    checks a pretrained model's config only (a comma list is checked whole before its first run)."""
    validate(cfg)
    tokenizer = build_tokenizer(cfg.model)
    corpus = load_corpus(cfg.data)
    require(len(corpus.documents["train"]) > 0, "data", "has no training documents", corpus.fingerprint)
    torch.manual_seed(cfg.seed)  # the initial weights (model and ODE) depend on the seed only
    if load_weights or cfg.model.name != "hf":
        model = build_model(cfg.model, tokenizer)
    else:
        from transformers import AutoConfig

        model = AutoConfig.from_pretrained(checkpoint_dir(cfg.model), local_files_only=True)
    strategy = build_rotary_strategy(cfg, model)
    return Prepared(tokenizer, corpus, model, strategy, eval_lengths(cfg), strategy.original_length)


def build_rotary_strategy(cfg, model):
    """The configured strategy for ``model`` (or its config): rotary_dim and base from the model,
    L0 from ``model.original_length`` when set, else from the model."""
    settings = clex.rotary_settings(model)
    if cfg.model.get("original_length"):
        settings["original_length"] = int(cfg.model.original_length)
    return clex.build_strategy(cfg.strategy.name, **settings, **strategy_options(cfg))


def build_patched_model(cfg, tokenizer):
    """A fresh model with the configured strategy patched in (same structure as the trained one)."""
    model = build_model(cfg.model, tokenizer)
    return clex.patch_model(model, build_rotary_strategy(cfg, model), log_scale=bool(cfg.strategy.get("log_scale")))


def config_hash(data) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


RUN_IDENTITY_IGNORES = ("name", "out_dir", "choices", "resume", "compare")  # where and how, not what, a run computes


def run_identity(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RUN_IDENTITY_IGNORES}


def run_name(cfg) -> str:
    if cfg.name:
        return str(cfg.name)
    content = run_identity(OmegaConf.to_container(cfg, resolve=True))
    return f"{cfg.choices.strategy}-{cfg.choices.model}-L{cfg.train.length}-{config_hash(content)}"


class StopOnNonFinite(L.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training loss became {loss.item()} at step {trainer.global_step}")


def make_trainer(cfg, max_steps: int, root: Path, checkpoints: bool, val_every: int | None, callbacks=()):
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    callbacks = [StopOnNonFinite(), *callbacks]
    if checkpoints:
        callbacks.append(ModelCheckpoint(dirpath=root / "checkpoints", filename="best", monitor="val/loss",
                                         save_top_k=1, save_last=True))
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    options = dict(OmegaConf.to_container(cfg.trainer))
    if isinstance(options.get("strategy"), dict):  # fsdp / deepspeed
        options["strategy"] = distributed.build_parallel(options)
    return L.Trainer(max_steps=max_steps, default_root_dir=root, logger=TensorBoardLogger(root, name="tensorboard", version=""),
                     callbacks=callbacks, enable_checkpointing=checkpoints, num_sanity_val_steps=0,
                     val_check_interval=val_every, limit_val_batches=None if val_every else 0,
                     gradient_clip_val=cfg.train.grad_clip, enable_model_summary=False, **options)


def checkpoint_step(path: Path) -> int:
    """The global step of a Lightning checkpoint: a file, or a directory (FSDP's sharded format)."""
    meta = path / "meta.pt" if path.is_dir() else path
    return torch.load(meta, map_location="cpu", weights_only=False)["global_step"]


def _loader(dataset, batch_size, start_batch: int = 0):
    sampler = ResumeSampler(len(dataset), start_batch * batch_size)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler)


def base_key(cfg, prepared: Prepared) -> str:
    return config_hash({"model": OmegaConf.to_container(cfg.model, resolve=True), "base": OmegaConf.to_container(cfg.base),
                        "data": OmegaConf.to_container(cfg.data), "corpus": prepared.corpus.fingerprint,
                        "seed": cfg.seed, "precision": str(cfg.trainer.get("precision")), "version": 1,
                        "world": [str(cfg.trainer.get(k)) for k in ("strategy", "devices", "num_nodes")]})


def pretrain_base(cfg, prepared: Prepared, train_tokens: torch.Tensor) -> dict:
    """Stage 1: plain RoPE at L0, cached under out_dir/.base/<hash of its settings> and reused."""
    root = Path(cfg.out_dir) / ".base" / base_key(cfg, prepared)
    weights, info_path = root / "model.pt", root / "base.json"
    if weights.is_file() and info_path.is_file():
        prepared.model.load_state_dict(torch.load(weights, map_location="cpu"))
        info = json.loads(info_path.read_text())
        log.info("stage 1: reusing the cached base model %s", root)
        return {**info, "cached": True, "path": str(root)}
    L0, b = prepared.original_length, cfg.base
    log.info("stage 1: pre-training the base model with plain RoPE at L0=%d for %d steps", L0, b.steps)
    def with_rope(model):
        return clex.patch_model(model, clex.build_strategy("rope", **clex.rotary_settings(model) | {"original_length": L0}))

    with_rope(prepared.model)
    optim = OmegaConf.create({"lr": b.lr, "ode_lr": None, "weight_decay": cfg.train.weight_decay,
                              "betas": cfg.train.betas, "warmup_steps": b.warmup_steps, "steps": b.steps})
    module = LongContextLM(prepared.model, optim, cfg.sampler, seed=cfg.seed)
    start = time.time()
    trainer = make_trainer(cfg, b.steps, root, checkpoints=False, val_every=None)
    windows = RandomWindows(train_tokens, L0, b.steps * b.batch_size * trainer.world_size, cfg.seed + 1)
    trainer.fit(module, _loader(windows, b.batch_size))
    if distributed.is_sharded(trainer):  # every rank goes on to stage 2 with the whole base model
        prepared.model = distributed.gather_full_model(
            prepared.model, lambda: with_rope(build_model(cfg.model, prepared.tokenizer)), every_rank=True)
    info = {"steps": b.steps, "original_length": L0, "tokens": len(windows) * L0,
            "wall_seconds": time.time() - start, "final_loss": float(trainer.callback_metrics["train/loss"])}
    if trainer.is_global_zero:
        state = {k: v for k, v in prepared.model.state_dict().items() if ".rotary_emb." not in k}
        io.atomic_write(weights, lambda handle: torch.save(state, handle))
        io.write_json(info_path, info)
    return {**info, "cached": False, "path": str(root)}


def evaluate_lengths(cfg, prepared: Prepared) -> list[dict]:
    rows = []
    for length in prepared.eval_lengths:
        sequences, documents, skipped = evaluation_sequences(
            prepared.tokenizer, prepared.corpus.documents["test"], length, cfg.eval.max_tokens, cfg.eval.seed)
        row = {"length": length, "ppl": None, "nll": None, "tokens": 0, "documents": documents,
               "skipped_documents": skipped}
        if len(sequences):
            cuda = torch.cuda.is_available() and next(prepared.model.parameters()).is_cuda
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.time()
            total, count = sequence_nll(prepared.model, sequences, cfg.eval.tokens_per_batch, cfg.eval.chunk_size)
            nll = total / count
            row.update(nll=nll, ppl=math.exp(nll) if nll < 700 else math.inf, tokens=count,
                       tokens_per_second=count / max(time.time() - start, 1e-9),
                       peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None)
        rows.append(row)
    return rows


def run_passkey(cfg, prepared: Prepared, run_dir: Path) -> dict:
    from clex.passkey import passkey_grid, plot_passkey

    p = cfg.eval.passkey
    lengths = [m * cfg.train.length for m in p.multipliers]
    rows = passkey_grid(prepared.model, prepared.tokenizer, lengths, list(p.depths), p.trials, cfg.eval.seed)
    io.write_json(run_dir / "passkey.json", {"strategy": cfg.strategy.name, "rows": rows})
    plot_passkey(rows, run_dir / "passkey.png", f"passkey retrieval: {cfg.strategy.name}")
    by_length = {n: sum(r["accuracy"] for r in rows if r["length"] == n) / len(p.depths) for n in lengths}
    return {"accuracy_by_length": by_length, "mean_accuracy": sum(by_length.values()) / len(by_length)}


def provenance() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for package in ("torch", "transformers", "lightning", "torchdiffeq", "omegaconf", "numpy", "tokenizers", "optuna"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"git_commit": commit, "python": platform.python_version(), "packages": versions, "numerics": numerics()}


def numerics() -> dict:
    """What moves float results between runs of one seed: threads, hardware, determinism."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cpu": cpu, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


def set_numerics(cfg):
    """``threads`` fixes torch's intra-op thread count; ``deterministic`` turns on torch's deterministic
    algorithms (and fixes threads at 1 unless ``threads`` says otherwise)."""
    threads = cfg.get("threads") or (1 if cfg.get("deterministic") else None)
    if threads:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(bool(cfg.get("deterministic")))


def format_table(results: dict) -> str:
    lines = [f"strategy {results['strategy']}  L={results['train_length']}  L0={results['original_length']}",
             f"{'length':>8} {'ppl':>9} {'nll':>8} {'tokens':>8} {'docs':>5}"]
    for row in results["eval"]:
        ppl = f"{row['ppl']:.3f}" if row["ppl"] is not None else "-"
        nll = f"{row['nll']:.4f}" if row["nll"] is not None else "-"
        lines.append(f"{row['length']:>8} {ppl:>9} {nll:>8} {row['tokens']:>8} {row['documents']:>5}")
    ext = results["extrapolation_length"]
    if ext["value"] is not None:
        bound = " (lower bound: every length stayed within)" if ext["censored"] else ""
        lines.append(f"extrapolation length (PPL within {1 + ext['eps']:g} x PPL at L): {ext['value']:.0f}{bound}")
    return "\n".join(lines)


def finished_results(cfg, run_dir: Path) -> dict | None:
    """A finished run of this exact config (rerunning a comma list skips what is done)."""
    path = run_dir / "results.json"
    if not (cfg.resume and path.is_file()):
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = run_identity(results.get("config") or {}) == run_identity(OmegaConf.to_container(cfg, resolve=True))
    return results if same else None


def run_experiment(cfg: DictConfig, prepared: Prepared | None = None, callbacks=()) -> dict | None:
    """Train and evaluate one configuration; returns the results written to results.json (None on
    ranks other than 0 under DDP).
    ``callbacks``: extra Lightning callbacks for the fine-tuning stage (e.g. a sweep's pruning)."""
    run_dir = Path(cfg.out_dir) / run_name(cfg)
    finished = finished_results(cfg, run_dir)
    if finished is not None:
        log.info("reusing the finished run %s (resume=false runs it again)", run_dir)
        return finished
    prepared = prepared or prepare(cfg)
    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    io.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    set_numerics(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train_tokens = packed_tokens(prepared.tokenizer, prepared.corpus.documents["train"])
    base = None
    if cfg.model.name != "hf" and cfg.base.steps > 0:
        base = pretrain_base(cfg, prepared, train_tokens)
    clex.patch_model(prepared.model, prepared.strategy, log_scale=bool(cfg.strategy.get("log_scale")))
    if cfg.train.gradient_checkpointing:  # recompute each layer's activations in the backward pass
        prepared.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    t = cfg.train
    optim = OmegaConf.create({"lr": t.lr, "ode_lr": t.ode_lr, "weight_decay": t.weight_decay, "betas": t.betas,
                              "warmup_steps": t.warmup_steps, "steps": t.steps})
    module = LongContextLM(prepared.model, optim, cfg.sampler, seed=cfg.seed)
    # the newest of our last.ckpt and the checkpoint Lightning writes when SLURM pre-empts the job
    saved = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.exists()]
    resume_from, done_steps = None, 0
    if cfg.resume and saved:
        steps = {p: checkpoint_step(p) for p in saved}
        resume_from = str(max(steps, key=steps.get))
        done_steps = steps[Path(resume_from)]
        log.info("stage 2: resuming %s from step %d (%s)", run_dir.name, done_steps, Path(resume_from).name)
    elif saved:  # resume=false: start over
        for path in [run_dir / "checkpoints", *run_dir.glob("hpc_ckpt_*.ckpt")]:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    log.info("stage 2: fine-tuning with %s at L=%d for %d steps", cfg.strategy.name, t.length, t.steps)
    train_start = time.time()
    trainer = make_trainer(cfg, t.steps, run_dir, checkpoints=True, val_every=min(t.val_every, t.steps),
                           callbacks=callbacks)
    # item i of the training windows is fixed; under DDP each rank takes every world_size-th batch item,
    # so a global batch is the same items whatever the number of processes
    per_step = int(cfg.trainer.get("accumulate_grad_batches", 1)) * trainer.world_size
    val_tokens = packed_tokens(prepared.tokenizer, prepared.corpus.documents["validation"])
    train_data = RandomWindows(train_tokens, t.length, t.steps * t.batch_size * per_step, cfg.seed + 2)
    val_data = RandomWindows(val_tokens, t.length, t.val_batches * t.batch_size * trainer.world_size, cfg.seed + 3)
    trainer.fit(module, _loader(train_data, t.batch_size, done_steps * per_step), _loader(val_data, t.batch_size),
                ckpt_path=resume_from)
    train_seconds = time.time() - train_start
    if distributed.is_sharded(trainer):  # FSDP: the weights are spread over the ranks
        prepared.model = distributed.gather_full_model(prepared.model, lambda: build_patched_model(cfg, prepared.tokenizer))
    if not trainer.is_global_zero:
        return None  # DDP: rank 0 evaluates and writes

    # Lightning moves the model to the CPU after fit: evaluate on the training device, in its precision
    prepared.model.to(trainer.strategy.root_device)
    with trainer.precision_plugin.forward_context():
        rows = evaluate_lengths(cfg, prepared)
        passkey = run_passkey(cfg, prepared, run_dir) if cfg.eval.get("passkey") else None
    tokenizer = getattr(prepared.tokenizer, "tokenizer", None)  # a pretrained model's own tokenizer
    clex.save_pretrained(prepared.model, run_dir / "model", tokenizer=tokenizer)
    results = {
        "schema_version": io.SCHEMA_VERSION,
        "name": run_dir.name,
        "run_dir": str(run_dir.resolve()),
        "strategy": cfg.strategy.name,
        "choices": OmegaConf.to_container(cfg.choices),
        "original_length": prepared.original_length,
        "train_length": t.length,
        "max_scale": getattr(prepared.strategy, "max_scale", None),
        "eval": rows,
        "extrapolation_length": extrapolation_length(rows, t.length, cfg.eval.eps),
        "train": {"steps": t.steps, "tokens": len(train_data) * t.length, "wall_seconds": train_seconds,
                  "world_size": trainer.world_size,
                  "final_loss": float(trainer.callback_metrics.get("train/loss", math.nan)),
                  "final_val_loss": float(trainer.callback_metrics.get("val/loss", math.nan))},
        "base": base,
        "passkey": passkey,
        "parameters": sum(p.numel() for p in prepared.model.parameters()),
        "attn_implementation": prepared.model.config._attn_implementation,
        "precision": str(cfg.trainer.get("precision")),
        "corpus": prepared.corpus.fingerprint,
        "wall_seconds": time.time() - started,
        "seed": cfg.seed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        **provenance(),
    }
    io.write_json(run_dir / "results.json", results)
    from clex.plots import plot_run

    plot_run(results, run_dir / "ppl_vs_length.png")
    return results
