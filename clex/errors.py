"""The user-facing error types: a config error is one line naming the key and what is allowed."""


class ConfigError(ValueError):
    """A user-facing configuration error: one line, naming the key and the allowed values."""


def require(condition: bool, key: str, why: str, value):
    """Raise the one-line ConfigError "<key> <why>, got <value>" unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key} {why}, got {value!r}")


class TooManyFailures(RuntimeError):
    """A sweep worker's last ``study.max_failures`` trials all failed: it stops instead of spinning."""
