"""What the command-line entry points share."""

import logging
import sys
import warnings
from pathlib import Path

from clex.errors import ConfigError


def fail(message, code: int = 2) -> int:
    """A command's error: one line on stderr, and the exit code to return (2: bad input)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def take_config_dirs(argv: list[str]) -> tuple[list[Path], list[str]]:
    """``--config-dir DIR`` or ``--config-dir=DIR`` (repeatable; a later folder wins over an earlier one) taken out
    of the arguments: the folders, made absolute, and the other arguments."""
    dirs, rest, args = [], [], iter(argv)
    for arg in args:
        if arg == "--config-dir" or arg.startswith("--config-dir="):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            if not value or value.startswith("-"):
                raise ConfigError("--config-dir needs a folder: --config-dir DIR")
            dirs.append(Path(value).expanduser().absolute())
        else:
            rest.append(arg)
    return dirs, rest


# Messages of the libraries that say nothing to our users, each matched exactly (other warnings still show).
NOISE = (
    # a resumed run's ModelCheckpoint: the run is found by its folder name, wherever out_dir was (moved, relative)
    r"The dirpath has changed from .* to .*, therefore `best_model_score`",
    # a resumed run writes into its own checkpoints/ folder, which holds its last.ckpt by design
    r"Checkpoint directory .* exists and is not empty\.",
    # our training loader resumes mid-epoch (ResumeSampler, clex/data/windows.py skips the batches done)
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
    # the Optuna features a sweep worker uses to retry a dead worker's trial (clex/sweeps/liveness.py)
    r"(\S+\.)?(RetryHeartbeatStaleTrialCallback(\.\w+)?|fail_stale_trials) is experimental \(supported from v",
    r"Argument ``heartbeat_interval`` is an experimental feature\.",
    # the DataLoader's worker count (a CPU run loads in-process on purpose) and PyTorch's pytree deprecation
    r".*does not have many workers",
    r".*LeafSpec",
    r".*`validation_step` but have no `val_dataloader`",  # stage 1 trains without validation
)


def quiet_libraries():
    """Lightning's start-up chatter (GPU/TPU availability, tips) hides the table, and the messages in NOISE
    say nothing to our users; every other warning stays."""
    import lightning  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" at every save of a tiny model
    logging.basicConfig(level=logging.INFO, format="%(message)s")
