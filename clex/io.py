"""Atomic writes: a temporary file in the same directory, then a rename, so a killed process never
leaves a half-written result behind."""

import errno
import fcntl
import json
import os
import pickle
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from clex.errors import ConfigError

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
    """Every torch.load in the block unpickles tensors and plain containers only: ``weights_only=True`` is
    forced on each call (torch's distributed checkpoint reads its non-tensor items with weights_only=False),
    and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which some torch versions let override an explicit True, is held
    unset whatever the version: a planted pickle in a cache or checkpoint never runs."""
    import torch

    saved, load = os.environ.pop(FORCE_UNSAFE_LOADS, None), torch.load

    def weights_only(*args, **kwargs):
        return load(*args, **{**kwargs, "weights_only": True})

    torch.load = weights_only
    try:
        yield
    finally:
        torch.load = load
        if saved is not None:
            os.environ[FORCE_UNSAFE_LOADS] = saved


class _MetadataUnpickler(pickle.Unpickler):
    """torch's distributed-checkpoint ``.metadata`` is a pickle (torch reads it with pickle.load): only the
    classes such a file names are found, so any other global (a planted os.system) fails before it runs."""

    MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
    NAMED = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict")}
    NAMED |= {("pathlib", name) for name in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath")}

    def find_class(self, module, name):
        import torch

        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if dtype or (module, name) in self.NAMED or (module in self.MODULES and not name.startswith("__")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


def check_sharded_checkpoint(folder, remedy: str):
    """A sharded (FSDP) checkpoint folder's ``.metadata`` files hold only checkpoint metadata, checked before
    torch unpickles them; the tensor files are then read weights-only (``weights_only_loads``)."""
    for path in sorted(Path(folder).glob("*.metadata")):
        try:
            with open(path, "rb") as handle:
                _MetadataUnpickler(handle).load()
        except Exception as error:  # a planted global, or a truncated file
            reason = " ".join(str(error).split())[:200]
            raise ConfigError(f"{path} is not a sharded checkpoint's metadata ({reason}); {remedy}") from None


def load_tensors(path, what: str, remedy: str):
    """The one way the project reads a checkpoint or cache file: its tensors and plain containers, never
    its code. A truncated, corrupt or code-holding file is a ConfigError naming it, ``what`` it was read as
    and the ``remedy``."""
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
    never leaves a stale one. The lock file is opened without following a link (a link planted there would
    otherwise have its target truncated) and must be a regular file: anything else is one ConfigError line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~_UMASK)
    except OSError as error:  # ELOOP: a symbolic link; EISDIR and the like
        raise ConfigError(
            f"{path}: the lock file of {what} is not a regular file ({os.strerror(error.errno)}); remove it"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: the lock file of {what} is not a regular file; remove it")
    with os.fdopen(fd, "r+") as handle:
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
    """Yield a sibling temporary directory to fill; on success its files get the umask's permissions and it
    replaces ``directory`` in two renames, so a killed save leaves the old directory or the new one, never half."""
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
    for written in tmp.rglob("*"):  # safetensors writes 0600: every file gets the umask's permissions, like results
        if written.is_file() and not written.is_symlink():
            os.chmod(written, 0o666 & ~_UMASK)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


KERNEL_FILES = ("/proc/", "/sys/", "/dev/")
MAX_JSON_BYTES = 64 * 2**20  # results.json, config.json, base.json: far below this; /dev/zero or a bomb: refused


def read_limited(path, what: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (a link is followed), at most ``limit`` of them. A device, FIFO or
    socket (``results.json -> /dev/zero``) or a larger file is one ConfigError naming ``what`` and the path, raised
    before anything is read; the file is opened non-blocking, so a FIFO never hangs the reader."""
    if os.path.realpath(path).startswith(KERNEL_FILES):  # sizes of 0 that read on for gigabytes (/proc/self/pagemap)
        raise ConfigError(f"{what} {path}: a file of the kernel's (/proc, /sys, /dev), not data; nothing read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise ConfigError(f"{what} {path}: cannot be read ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {path}: not a regular file (a device, FIFO or socket); nothing read")
        if info.st_size > limit:
            raise ConfigError(f"{what} {path}: {info.st_size:,} bytes, more than the {limit:,} read for one such file")
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while we read
        raise ConfigError(f"{what} {path}: more than the {limit:,} bytes read for one such file")
    return data


def is_rank_zero() -> bool:
    """This process is the first of its job: rank 0 of the ranks Lightning or srun starts (one writer of a folder)."""
    return all(os.environ.get(key, "0") == "0" for key in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
