"""Atomic writes: a temporary file in the same directory, then a rename, so a killed process never
leaves a half-written result behind."""

import errno
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from clex.registry import ConfigError

SCHEMA_VERSION = 1  # of results.json
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a shared group should read results like any file
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_failure(error: BaseException, run_dir) -> str | None:
    """The one line for a run stopped by its file system (a full disk, a folder deleted while it ran, a
    permission taken away), or None when ``error`` is something else. torch.save reports a failed write as a
    RuntimeError of its stream writer, not as an OSError."""
    torch_write = isinstance(error, RuntimeError) and "PytorchStreamWriter failed" in str(error)
    if not (isinstance(error, OSError) or torch_write):
        return None
    where = os.fsdecode(getattr(error, "filename", None) or run_dir)
    resume = f"then rerun the same command: the work {run_dir} finished is kept and resumed"
    try:
        full = os.statvfs(next(p for p in Path(where).parents if p.exists())).f_bavail == 0
    except (OSError, StopIteration):
        full = False
    if full or getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device of {where}: free some, {resume}"
    if getattr(error, "errno", None) == errno.ENOENT:
        return f"{where} vanished while the run wrote it (a folder deleted while it ran?); {resume}"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0][:200]
    return f"writing {where} failed ({reason}); {resume}"


def write_text(path, text: str):
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


FORCE_UNSAFE_LOADS = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextmanager
def weights_only_loads():
    """Every torch.load in the block unpickles tensors and plain containers only. Torch versions differ on
    whether TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD overrides an explicit weights_only=True (2.6+: it does not), so
    it is held unset here whatever the version: a planted pickle in a cache or checkpoint never runs."""
    saved = os.environ.pop(FORCE_UNSAFE_LOADS, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[FORCE_UNSAFE_LOADS] = saved


def load_tensors(path, what: str, remedy: str):
    """The one way the project reads a checkpoint or cache file: its tensors and plain containers, never
    its code. A truncated, corrupt or code-holding file is a ConfigError naming it, ``what`` it was read as
    and the ``remedy``."""
    import pickle

    import torch

    try:
        with weights_only_loads():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message would advise weights_only=False
        why = "it holds objects other than tensors and plain containers, which are never unpickled: they could run code"
    except Exception as error:  # truncated or corrupt
        why = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    raise ConfigError(f"{path} cannot be read as {what} ({why}); {remedy}")


class Busy(RuntimeError):
    """Another live process holds the lock; the message names its pid."""


@contextmanager
def exclusive(path, what: str, wait: bool = False):
    """Hold an exclusive lock on ``path`` (its content: our pid) for the block; ``wait``: block until
    it is free instead of raising Busy. The OS drops the lock when its process dies, so a killed run
    never leaves a stale one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            raise Busy(
                f"{what} is in use by process {handle.read().strip() or '(unknown pid)'}; wait for it to "
                "finish, or give this run another name="
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def replaced_directory(directory):
    """Yield a sibling temporary directory to fill; on success it replaces ``directory`` in two renames, so
    a killed save leaves the old directory or the new one, never half of one."""
    import shutil

    directory = Path(directory)
    tmp, old = directory.with_name(f".{directory.name}.tmp"), directory.with_name(f".{directory.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
