"""Atomic writes: a temporary file in the same directory, then a rename, so a killed process never
leaves a half-written result behind."""
import json
import os
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1  # of results.json


def atomic_write(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
