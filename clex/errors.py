"""The user-facing error types (a config error is one line naming the key and what is allowed) and warnings."""

import signal
import sys


class ConfigError(ValueError):
    """A user-facing configuration error: one line, naming the key and the allowed values."""


def require(condition: bool, key: str, why: str, value):
    """Raise the one-line ConfigError "<key> <why>, got <value>" unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key} {why}, got {value!r}")


class Interrupted(BaseException):
    """SIGINT or SIGTERM: a BaseException like KeyboardInterrupt, so that no ``except Exception`` (a sweep's trial,
    a library) swallows it; ``where`` says what was interrupted, ``code`` is the exit status (128 + the signal)."""

    def __init__(self, signum: int, where: str = "before training"):
        super().__init__(signum, where)
        self.signum, self.where, self.code = signum, where, 128 + signum

    def __str__(self):
        return f"interrupted by {signal.Signals(self.signum).name} {self.where}"


class TooManyFailures(RuntimeError):
    """A sweep worker's last ``study.max_failures`` trials all failed: it stops instead of spinning."""


WARNED = set()


def warn(message: str, once: bool = False):
    """The one way clex warns: one line on stderr, "warning: <message>", seen whether or not logging is set up
    (the commands' progress lines go through the ``clex`` logger). ``once``: once per process (a comma list checks
    every config before its first run)."""
    if once and message in WARNED:
        return
    WARNED.add(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)
