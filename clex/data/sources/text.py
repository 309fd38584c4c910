import codecs
import glob
import json
import logging
import os
from pathlib import Path

from clex import io
from clex.data.sources import DATASETS
from clex.errors import ConfigError, warn

log = logging.getLogger("clex")
MAX_FILE_BYTES = 2 * 2**30  # one corpus file read whole: a larger one is refused (split it, or use data=hf)
# a byte-order mark says how a file is encoded; UTF-32's are tried first (UTF-32-LE's begins with UTF-16-LE's)
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class BadFile(ConfigError):
    """A corpus file that is binary or not decodable text: ``reason`` says where."""

    def __init__(self, path: Path, reason: str, remedy: str):
        super().__init__(f"data.paths: {path} {reason}; {remedy}, or data.on_bad_file=skip")
        self.path, self.reason = path, reason


def matching_files(patterns, key: str) -> list[Path]:
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern), recursive=True))
        if not matches:
            raise ConfigError(f"{key}: no file matches {pattern!r}")
        regular = [Path(m).resolve() for m in matches if Path(m).is_file()]
        if not regular:
            raise ConfigError(
                f"{key}: {pattern!r} matches no regular file (only folders or devices such as "
                "/dev/null); give text or .jsonl files"
            )
        files += regular
    return files


def decode_file(path: Path) -> tuple[str, str]:
    """A file's text and its encoding: UTF-8 strictly, or UTF-16/32 where a byte-order mark says so. A NUL
    byte (a binary file) or bytes the encoding cannot decode are a BadFile naming the byte offset. Line
    ends are read as text mode reads them (CRLF and CR become LF), so a UTF-8 file reads as it always did."""
    raw = io.read_limited(path, "data.paths: the corpus file", MAX_FILE_BYTES)
    encoding = next((name for bom, name in BOMS if raw.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\0" in raw:
        raise BadFile(
            path, f"is a binary file (a NUL byte at byte offset {raw.index(0)}), not text", "remove it from data.paths"
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise BadFile(
            path,
            f"is not {encoding.upper()} text (byte 0x{raw[error.start]:02x} at byte offset {error.start})",
            "convert it to UTF-8",
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding


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
    skipped, other_encodings = [], []
    for path in files:
        key = path.relative_to(root).as_posix()
        try:
            text, encoding = decode_file(path)
        except BadFile as error:
            if cfg.get("on_bad_file", "error") != "skip":
                raise
            skipped.append(error)
            continue
        if encoding != "utf-8":
            other_encodings.append(f"{path} ({encoding.upper()})")
        if path.suffix == ".jsonl":
            for number, record in jsonl_texts(path, text, cfg.text_field):
                yield f"{key}:{number}", record, given.get(path)
        else:
            yield key, text, given.get(path)
    if other_encodings:
        log.info(
            "data: %d file(s) read by their byte-order mark, not as UTF-8: %s",
            len(other_encodings),
            ", ".join(other_encodings[:3]) + (", ..." if len(other_encodings) > 3 else ""),
        )
    if skipped:
        warn(
            f"data: skipped {len(skipped)} file(s) that are binary or not text (data.on_bad_file=skip); the first: "
            f"{skipped[0].path} {skipped[0].reason}"
        )


def jsonl_texts(path: Path, text: str, field: str):
    """``field`` of each record of a .jsonl file's ``text``, with its line number from 0."""
    for number, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except RecursionError:
            raise ConfigError(f"data.paths: {path}:{number + 1} is nested too deeply to read") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"data.paths: {path}:{number + 1} is not a JSON record ({error.msg})") from None
        if not isinstance(record, dict):
            raise ConfigError(
                f"data.paths: {path}:{number + 1} is a JSON {type(record).__name__}, not an object with a text field"
            )
        if field not in record:
            raise ConfigError(
                f"data.text_field: {path}:{number + 1} has no field {field!r} (fields: {', '.join(record)})"
            )
        if not isinstance(record[field], str):
            raise ConfigError(
                f"data.text_field: {path}:{number + 1}: {field!r} is a {type(record[field]).__name__}, not text"
            )
        yield number, record[field]
