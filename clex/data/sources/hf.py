"""``data=hf``: documents from a Hugging Face ``datasets`` dataset on local disk (no hub access).

``data.path`` is either a folder written by ``save_to_disk`` (a Dataset, or a DatasetDict whose
train / validation / test splits are kept), read memory-mapped row by row, or files and globs of
.parquet, .jsonl / .json, .csv (these also .gz) or .arrow, streamed row by row. ``max_documents`` and
``max_characters`` stop the reading early: they take the first documents in reading order (row
order, files in sorted order), before load_corpus sorts them by key.
"""

import glob
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path

from clex.data.sources import DATASETS
from clex.errors import ConfigError, warn

BUILDERS = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".arrow": "arrow",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".csv.gz": "csv",
}  # datasets decompresses .gz as it reads
SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}
SUPPORTED = "a folder written by save_to_disk, or " + ", ".join(BUILDERS) + " files"


@DATASETS.register("hf")
def hf_documents(cfg):
    """``(key, text, split)`` for every row with a string ``text_field``. The key is the row's
    ``id_field``, else ``<split or file>/<row index>`` (the index zero-padded, so that sorting by key
    keeps the reading order); a split is None (train: split by load_corpus) or validation / test."""
    import datasets  # slow to import: only when this source is used

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    text_field, id_field = cfg.get("text_field") or "text", cfg.get("id_field")
    max_documents, max_characters = cfg.get("max_documents") or math.inf, cfg.get("max_characters") or math.inf
    parts = open_parts(cfg, datasets)
    per_split = any(split for _, split, _ in parts)  # a DatasetDict with its own validation or test
    used, skipped = {}, 0
    for prefix, split, dataset in parts:
        # a DatasetDict caps each split, so a cap does not leave validation and test unread; files share one cap
        count = used.setdefault(split if per_split else None, [0, 0])  # documents, characters
        if count[0] >= max_documents or count[1] >= max_characters:
            continue
        dataset = needed_columns(dataset, {"text_field": text_field, "id_field": id_field}, prefix or cfg.path)
        for index, row in enumerate(rows_of(dataset, prefix or cfg.path)):
            text = row[text_field]
            if not isinstance(text, str):
                skipped += 1
                continue
            if id_field is None:
                key = f"{prefix}/{index:09d}" if prefix else f"{index:09d}"
            elif row[id_field] is None:
                raise ConfigError(f"data.id_field: row {index} of {prefix or cfg.path} has no {id_field!r} (null)")
            else:
                key = str(row[id_field])
            yield key, text, split
            count[0], count[1] = count[0] + 1, count[1] + len(text)
            if count[0] >= max_documents or count[1] >= max_characters:
                break
    if skipped:
        warn(f"data: skipped {skipped} row(s) whose {text_field!r} is not a string (null or another type)")


MAX_RECORD_BYTES = 64 * 2**20  # one line of a json / csv file: a 3 GB line took 9.4 GB before the reader failed


def check_records(path: Path, limit: int = MAX_RECORD_BYTES):
    """No line of a (gzipped) text data file longer than ``limit`` bytes, checked in one streamed pass (1 MiB at a
    time, decompressed as it goes) before the reader, which holds a whole line, sees it."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    line, number = 0, 1
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(2**20):  # a line inside one chunk is shorter than the limit
                first = chunk.find(b"\n")
                longest = line + (len(chunk) if first < 0 else first)  # the line that runs on from before
                if first >= 0:
                    number += chunk.count(b"\n")
                    line = len(chunk) - chunk.rfind(b"\n") - 1
                else:
                    line = longest
                if max(longest, line) > limit:
                    raise ConfigError(
                        f"data.path: {path} line {number}: a record of more than {limit:,} bytes; split it, or "
                        "give plain text through data=text"
                    )
    except (OSError, EOFError) as error:  # a damaged gzip stream
        raise ConfigError(f"data.path: {path} cannot be read ({type(error).__name__}: {error})") from None


@contextmanager
def quiet_readers():
    """datasets' readers log a failure we say in one line ourselves."""
    logger = logging.getLogger("datasets")
    level, logger.level = logger.level, logging.CRITICAL
    try:
        yield
    finally:
        logger.setLevel(level)


def rows_of(dataset, where):
    """A streamed dataset's rows; a file its reader fails on midway (a jsonl cut in its last record) is one line
    naming it and the row it reached."""
    index = 0
    try:
        with quiet_readers():
            for index, row in enumerate(dataset):  # noqa: B007 (the index names the row in the error)
                yield row
    except Exception as error:  # pyarrow and the json / csv readers raise many kinds
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(
            f"data.path: {where} cannot be read ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
            f"the reader failed after {index} row(s)"
        ) from None


def open_parts(cfg, datasets) -> list:
    """``[(key prefix, split, dataset)]``: the splits of a saved folder, or one part per file."""
    paths = [cfg.path] if isinstance(cfg.get("path"), str) else list(cfg.get("path") or [])
    if not paths:
        raise ConfigError(
            f"data.path is empty; give {SUPPORTED}, e.g. data.path=pg19_saved or data.path=[data/*.parquet]"
        )
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return saved_parts(cfg, datasets, paths[0])
    files = []
    for pattern in paths:
        matches = sorted(glob.glob(str(pattern), recursive=True))
        if not matches:
            raise ConfigError(f"data.path: nothing matches {str(pattern)!r}; give {SUPPORTED}")
        for match in matches:
            if builder_of(match) is None:
                raise ConfigError(f"data.path: {match} is not one of {SUPPORTED} (data=text reads plain text)")
            files.append(Path(match).resolve())
    files = list(dict.fromkeys(files))
    root = Path(os.path.commonpath([str(f.parent) for f in files]))  # keys relative to it survive a move
    return [(f.relative_to(root).as_posix(), None, open_file(datasets, f)) for f in files]


def open_file(datasets, path: Path):
    """One data file as a streamed dataset; a file its reader cannot open (random bytes named .parquet) is one
    line naming it."""
    if builder_of(path.name) in ("json", "csv"):
        check_records(path)
    try:
        with quiet_readers():
            return datasets.load_dataset(builder_of(path.name), data_files=str(path), split="train", streaming=True)
    except Exception as error:  # pyarrow, datasets and the json / csv readers raise many kinds
        raise ConfigError(
            f"data.path: {path} cannot be read as {builder_of(path.name)} ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]})"
        ) from None


def builder_of(name: str):
    return next((builder for suffix, builder in BUILDERS.items() if name.endswith(suffix)), None)


def saved_parts(cfg, datasets, path):
    try:
        saved = datasets.load_from_disk(path)  # memory-mapped Arrow: rows are read as they are iterated
    except FileNotFoundError:
        raise ConfigError(
            f"data.path: {path} is a folder but not one written by save_to_disk; for a folder of "
            f"data files give a glob, e.g. data.path=[{path}/*.parquet]"
        ) from None
    if not isinstance(saved, datasets.DatasetDict):
        return [("", None, saved)]
    names = {**SPLIT_NAMES, **(cfg.get("splits") or {})}
    unknown = [name for name in saved if name not in names]
    if unknown or not set(names.values()) <= {*SPLIT_NAMES.values(), None}:
        raise ConfigError(
            f"data.splits: {path} holds the splits {', '.join(saved)}; data=hf reads train, validation "
            "(or valid, dev) and test: map the others, e.g. data.splits={other: test} (null skips one)"
        )
    # train documents get no split: load_corpus splits them by key, and keeps given splits for their documents
    return [
        (name, None if names[name] == "train" else names[name], saved[name])
        for name in saved
        if names[name] is not None
    ]


def needed_columns(dataset, columns: dict, where):
    """Only the text (and id) columns are read: a parquet file skips the others."""
    names = dataset.column_names or list(next(rows_of(dataset, where), {}))  # a streamed csv names them in its rows
    for key, column in columns.items():
        if column is not None and column not in names:
            raise ConfigError(f"data.{key}: {where} has no column {column!r}; its columns: {', '.join(names)}")
    return dataset.select_columns(list(dict.fromkeys(c for c in columns.values() if c is not None)))
