"""What a run computes, as opposed to where it goes: the one definition that names run folders, finds a
finished run or a trained twin to reuse, and groups runs into variants for the statistics (no torch here).

A run's identity is its resolved config without the keys that only say where and how it is kept; a
*variant* is that identity without the seed (runs of one variant with different seeds are its samples).
"""

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

WHERE_NOT_WHAT = ("name", "out_dir", "choices", "resume", "compare")  # top-level keys outside a run's identity
# strategies that draw t in training (Strategy.samples_scale; a test keeps the two equal): only they read the
# ``sampler`` section, so for any other it is left out of the identity (strategy=yarn sampler=official,pose is
# one run, not two under two names)
SAMPLING_STRATEGIES = ("clex",)


def drop_nulls(config: dict, depth: int = 2) -> dict:
    """A config without its null-valued options (``key`` and ``section.key``): an option added later with a
    null default (the old behaviour) leaves run names and variants of earlier runs unchanged. Deeper maps
    are the user's own values (``data.splits={test: null}``: null means something there) and stay whole."""
    return {
        k: drop_nulls(v, depth - 1) if isinstance(v, dict) and depth > 1 else v
        for k, v in config.items()
        if v is not None
    }


def config_hash(data) -> str:
    """A short, stable hash of a JSON-able value (key order does not matter)."""
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


# the attention section's keys sat in the strategy section until it existed: configs written then are read in
# today's layout (current_layout), and identities are hashed in that one (identity_hash), so every run named
# before keeps its name and variant, and is found and reused
ATTENTION_KEYS = ("log_scale", "log_scale_clamp", "log_scale_train")


def current_layout(config: dict) -> dict:
    """A config, or one written before the attention section, in today's layout (a new dict; ``config`` kept)."""
    strategy = config.get("strategy")
    if not isinstance(strategy, dict) or not any(k in strategy for k in ATTENTION_KEYS):
        return config
    moved = {k: strategy[k] for k in ATTENTION_KEYS if k in strategy}
    return {
        **config,
        "strategy": {k: v for k, v in strategy.items() if k not in ATTENTION_KEYS},
        "attention": {**moved, **(config.get("attention") or {})},
    }


def current_key(key: str) -> str:
    """A dotted key in today's layout (``strategy.log_scale``, as studies recorded it then: ``attention.log_scale``)."""
    leaf = key.removeprefix("strategy.")
    return f"attention.{leaf}" if leaf != key and leaf in ATTENTION_KEYS else key


def identity_hash(identity: dict) -> str:
    """The hash that names a run or a variant: of its identity in the layout it was first hashed in."""
    attention = identity.get("attention")
    if isinstance(attention, dict) and isinstance(identity.get("strategy"), dict):
        identity = {k: v for k, v in identity.items() if k != "attention"}
        identity["strategy"] = {**identity["strategy"], **attention}
    return config_hash(identity)


def run_identity(config: dict) -> dict:
    """Everything in a resolved config that changes what the run computes (in today's layout)."""
    config = current_layout(config)
    strategy = (config.get("strategy") or {}).get("name") if isinstance(config.get("strategy"), dict) else None
    unread = WHERE_NOT_WHAT + (() if strategy in SAMPLING_STRATEGIES else ("sampler",))
    return {k: v for k, v in drop_nulls(config).items() if k not in unread}


def training_identity(config: dict) -> dict:
    """What fine-tuning reads: the run's identity without ``eval``."""
    return {k: v for k, v in run_identity(config).items() if k != "eval"}


def variant_config(config: dict) -> dict:
    """The run's identity without its seed, and without the key-token evaluator's path, which is the seed's own
    (``runs/evaluator-seed${seed}/model``: every seed of a variant has another); its threshold stays."""
    variant = {k: v for k, v in run_identity(config).items() if k != "seed"}
    evaluation = variant.get("eval")
    keys = evaluation.get("key_tokens") if isinstance(evaluation, dict) else None
    if isinstance(keys, str):
        variant["eval"] = {**evaluation, "key_tokens": {"threshold": 2.0}}
    elif isinstance(keys, dict):
        variant["eval"] = {**evaluation, "key_tokens": {k: v for k, v in keys.items() if k != "evaluator"}}
    return variant


def variant_id(config: dict) -> str:
    """A short hash of everything in the resolved config that is not a seed or a path."""
    return identity_hash(variant_config(config))


def stage_one_section(cfg) -> DictConfig:
    """The ``base`` section (stage 1), resolved, with the optimiser settings stage 1 takes from ``train``: weight
    decay and betas (unless ``base`` sets them) and gradient clipping."""
    shared = {"weight_decay": cfg.train.weight_decay, "betas": cfg.train.betas}
    own = {k: v for k, v in OmegaConf.to_container(cfg.base, resolve=True).items() if v is not None}
    base = OmegaConf.merge(shared, own)
    base.grad_clip = cfg.train.grad_clip
    return base


def base_key(cfg, corpus_fingerprint) -> str:
    """Stage 1's cache key (out_dir/.base/<key>): everything the base model's training reads (the model, stage 1's
    section with the optimiser settings it takes from ``train``, the data and corpus, the seed, the numerics), so
    every strategy and L of one such setting shares one base, and no other setting reuses it."""
    return config_hash(
        {
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "base": OmegaConf.to_container(stage_one_section(cfg)),
            "data": OmegaConf.to_container(cfg.data),
            "corpus": corpus_fingerprint,
            "seed": cfg.seed,
            "precision": str(cfg.trainer.get("precision")),
            "version": 2,  # 2: train's weight decay, betas and clipping, which stage 1 uses, are part of the key
            "world": [str(cfg.trainer.get(k)) for k in ("strategy", "devices", "num_nodes")],
        }
    )
