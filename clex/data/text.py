import glob
import json
from pathlib import Path

from clex.data import DATASETS
from clex.registry import ConfigError


@DATASETS.register("text")
def text_documents(cfg):
    """Local files: plain text (one document per file) or ``.jsonl`` (one document per line, the
    ``text_field`` of each record). ``paths`` takes files and globs."""
    if not cfg.paths:
        raise ConfigError("data.paths is empty; give files or globs, e.g. data.paths=[books/*.txt]")
    files = []
    for pattern in cfg.paths:
        matches = sorted(glob.glob(str(pattern), recursive=True))
        if not matches:
            raise ConfigError(f"data.paths: no file matches {pattern!r}")
        files += [Path(m) for m in matches if Path(m).is_file()]
    for path in files:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as error:
                            raise ConfigError(f"data.paths: {path}:{number + 1} is not a JSON record ({error.msg})") from None
                        if not isinstance(record, dict):
                            raise ConfigError(f"data.paths: {path}:{number + 1} is a JSON {type(record).__name__}, "
                                              "not an object with a text field")
                        if cfg.text_field not in record:
                            raise ConfigError(f"data.text_field: {path}:{number + 1} has no field "
                                              f"{cfg.text_field!r} (fields: {', '.join(record)})")
                        yield f"{path}:{number}", record[cfg.text_field]
        else:
            yield str(path), path.read_text(encoding="utf-8", errors="surrogateescape")
