"""Atomic writes: a temporary file in the same directory, then a rename, so a killed process never
leaves a half-written result behind."""
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

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


def write_text(path, text: str):
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


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
            raise Busy(f"{what} is in use by process {handle.read().strip() or '(unknown pid)'}; wait for it to "
                       "finish, or give this run another name=") from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
