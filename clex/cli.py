"""What the command-line entry points share."""

import logging
import sys
import warnings


def fail(message, code: int = 2) -> int:
    """A command's error: one line on stderr, and the exit code to return (2: bad input)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def quiet_libraries():
    """Lightning's start-up chatter (GPU/TPU availability, tips) hides the table; warnings stay."""
    import lightning  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")  # stage 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
