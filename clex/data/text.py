import glob
import json
import os
from pathlib import Path

from clex.data import DATASETS
from clex.registry import ConfigError


def matching_files(patterns, key: str) -> list[Path]:
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern), recursive=True))
        if not matches:
            raise ConfigError(f"{key}: no file matches {pattern!r}")
        files += [Path(m).resolve() for m in matches if Path(m).is_file()]
    return files


@DATASETS.register("text")
def text_documents(cfg):
    """Local files: plain text (one document per file) or ``.jsonl`` (one document per line, the
    ``text_field`` of each record). ``paths`` takes files and globs; ``test_paths`` and
    ``validation_paths`` put files in those splits (the rest are split as ``data.split`` says). A
    document's key is its path relative to the common folder of all files, so the split survives a move."""
    if not cfg.paths:
        raise ConfigError("data.paths is empty; give files or globs, e.g. data.paths=[books/*.txt]")
    given = {}
    for split in ("validation", "test"):
        for path in matching_files(cfg.get(f"{split}_paths") or [], f"data.{split}_paths"):
            given[path] = split
    files = list(dict.fromkeys(matching_files(cfg.paths, "data.paths") + list(given)))
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    for path in files:
        key = path.relative_to(root).as_posix()
        if path.suffix == ".jsonl":
            for number, text in jsonl_texts(path, cfg.text_field):
                yield f"{key}:{number}", text, given.get(path)
        else:
            yield key, path.read_text(encoding="utf-8", errors="surrogateescape"), given.get(path)


def jsonl_texts(path: Path, field: str):
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"data.paths: {path}:{number + 1} is not a JSON record ({error.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"data.paths: {path}:{number + 1} is a JSON {type(record).__name__}, "
                                  "not an object with a text field")
            if field not in record:
                raise ConfigError(f"data.text_field: {path}:{number + 1} has no field {field!r} "
                                  f"(fields: {', '.join(record)})")
            yield number, record[field]
