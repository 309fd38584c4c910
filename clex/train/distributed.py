"""Lightning strategies that need the model: FSDP (torch's FSDP2) and DeepSpeed (ZeRO 1/2).

``trainer.strategy`` is a plain string for what Lightning builds itself (``ddp``, ``auto``) or a
mapping ``{name: fsdp | deepspeed, ...options}`` built here (``build_parallel``)."""

import importlib.util
import inspect

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from clex.errors import ConfigError, require
from clex.rope.patch import rotary_module


def decoder_layers(model) -> list[torch.nn.Module]:
    """The modules transformers never splits across devices (``_no_split_modules``): the decoder layers."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(
            f"trainer.strategy: {type(model).__name__} names no decoder layer class to shard "
            f"(_no_split_modules={sorted(names)})"
        )
    return layers


class FSDPStrategy(ModelParallelStrategy):
    """Fully sharded data parallel with torch's ``fully_shard`` (FSDP2) over all ranks, through
    Lightning's ModelParallelStrategy (tensor-parallel size 1). One FSDP unit per decoder layer and
    one for the rest. The rotary module (the CLEX ODE) is a unit of its own that never leaves float32:
    an 8-bit mantissa on the ODE weights would put a phase error on every far position. Runs on GPUs,
    and on CPU processes with gloo (how the tests run it)."""

    def __init__(
        self,
        world_size: int,
        precision: str,
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = False,
    ):
        super().__init__(
            data_parallel_size=world_size,
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
        )
        self.precision = precision
        self.reshard_after_forward = reshard_after_forward

    def shard_model(self, model, mesh):
        """Called from ``LightningModule.configure_model`` on every rank, once."""
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        if isinstance(model, FSDPModule):
            return
        mesh = mesh["data_parallel"]
        # bf16-mixed: gather weights in bf16 (half the traffic), reduce gradients in float32
        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if self.precision == "bf16-mixed"
            else MixedPrecisionPolicy()
        )
        fully_shard(rotary_module(model), mesh=mesh)
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=self.reshard_after_forward)
        fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=self.reshard_after_forward)


def fsdp(
    world_size: int, precision: str, reshard_after_forward: bool = True, save_distributed_checkpoint: bool = False
):
    return FSDPStrategy(world_size, precision, reshard_after_forward, save_distributed_checkpoint)


def deepspeed(world_size: int, precision: str, stage: int = 2, offload_optimizer: bool = False):
    """DeepSpeed ZeRO stage 1 or 2: optimiser state (and gradients) sharded, every rank keeps whole
    weights, so rank 0 evaluates the trained model as is. Sharded weights (ZeRO 3): use trainer=fsdp."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    require(stage in (1, 2), "trainer.strategy.stage", "must be 1 or 2 (sharded weights: trainer=fsdp)", stage)
    return DeepSpeedStrategy(stage=stage, offload_optimizer=offload_optimizer)


BUILDERS = {"fsdp": fsdp, "deepspeed": deepspeed}
NEEDS = {"deepspeed": "deepspeed"}  # strategy -> the package it imports


# set by make_trainer itself, not by the trainer config group
MANAGED = (
    "max_steps",
    "default_root_dir",
    "logger",
    "callbacks",
    "enable_checkpointing",
    "num_sanity_val_steps",
    "val_check_interval",
    "limit_val_batches",
    "gradient_clip_val",
    "enable_model_summary",
)


# Trainer keywords that change what a run trains while its identity, its cached base and its results.json would
# still say the steps asked for: refused (train.steps / base.steps set the budget)
CHANGE_TRAINING = {
    "limit_train_batches": "train.steps or base.steps",
    "fast_dev_run": "train.steps=1 base.steps=1",
    "max_epochs": "train.steps",
    "min_epochs": "train.steps",
    "max_time": "train.steps",
    "min_steps": "train.steps",
    "overfit_batches": "train.steps",
    "limit_val_batches": "train.val_batches",
    "val_check_interval": "train.val_every",
    "check_val_every_n_epoch": "train.val_every",
}


def check_trainer(trainer_options: dict):
    """Every ``trainer.*`` key is a lightning.Trainer keyword we do not set ourselves, and the
    accelerator exists on this machine."""
    import lightning

    allowed = sorted(set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", *MANAGED})
    for key in trainer_options:
        if key in CHANGE_TRAINING:
            raise ConfigError(
                f"trainer.{key} changes what a run trains, but not its name, its cached base model or the steps its "
                f"results.json reports; set {CHANGE_TRAINING[key]} instead"
            )
        require(
            key in allowed,
            f"trainer.{key}",
            f"is not a lightning.Trainer option we pass on; allowed: {', '.join(allowed)}",
            trainer_options[key],
        )
    check(trainer_options)
    accelerator = str(trainer_options.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        require(
            torch.cuda.is_available(),
            "trainer.accelerator",
            "needs a CUDA GPU, and torch sees none here (trainer=cpu runs on the CPU)",
            accelerator,
        )
    elif accelerator == "mps":
        require(
            torch.backends.mps.is_available(),
            "trainer.accelerator",
            "needs Apple's MPS, which torch does not see here",
            accelerator,
        )


def check(trainer_options: dict):
    """Config-time check of ``trainer.strategy`` when it is a mapping (no model needed)."""
    options = trainer_options.get("strategy")
    if not isinstance(options, dict):
        return
    name = options.get("name")
    require(name in BUILDERS, "trainer.strategy.name", f"must be one of {', '.join(BUILDERS)}", name)
    package = NEEDS.get(name)
    require(
        package is None or importlib.util.find_spec(package) is not None,
        "trainer.strategy.name",
        f"{name} needs the {package} package (pip install {package}), which is not installed",
        name,
    )
    allowed = list(inspect.signature(BUILDERS[name]).parameters)[2:]
    for key in options:
        require(
            key in allowed + ["name"],
            f"trainer.strategy.{key}",
            f"is not an option of {name}; allowed: {', '.join(allowed)}",
            options[key],
        )
    for key in ("devices", "num_nodes"):
        value = trainer_options.get(key, 1)
        require(
            isinstance(value, int) and value >= 1, f"trainer.{key}", f"must be a positive integer for {name}", value
        )


def build_parallel(trainer_options: dict):
    """A Lightning strategy object from a ``trainer.strategy`` mapping."""
    check(trainer_options)
    options = dict(trainer_options["strategy"])
    world_size = trainer_options.get("devices", 1) * trainer_options.get("num_nodes", 1)
    return BUILDERS[options.pop("name")](world_size, str(trainer_options.get("precision", "32-true")), **options)


def is_sharded(trainer) -> bool:
    return isinstance(trainer.strategy, FSDPStrategy)


def gather_full_model(model, fresh_model, every_rank: bool = False):
    """Gather FSDP's sharded weights (a collective: every rank calls it) into ``fresh_model()``, an
    unsharded copy built on rank 0 (``every_rank``: on every rank, to go on training it); other
    ranks get None."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # cpu_offload keeps the full copy on rank 0 only
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not every_rank))
    if not (every_rank or dist.get_rank() == 0):
        return None
    copy = fresh_model()
    copy.load_state_dict({k: v.cpu() for k, v in state.items()})
    return copy
