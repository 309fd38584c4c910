"""Corpus files are read as what they are: UTF-8 strictly, UTF-16/32 by their byte-order mark (said once), a
binary or undecodable file refused naming it and the byte offset, or skipped and counted on request."""

import json
import logging

import pytest
from conftest import said
from omegaconf import OmegaConf

from clex.data.corpus import load_corpus
from clex.errors import ConfigError

TEXT = "def f(x):\n    return x  # é, ü, 中\n" * 40


def corpus_of(tmp_path, files: dict, **extra):
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return OmegaConf.create(
        {
            "name": "text",
            "paths": [str(folder / "*")],
            "text_field": "text",
            "split": "position",
            "validation_fraction": 0.05,
            "test_fraction": 0.05,
            "max_documents": None,
            **extra,
        }
    )


def texts(corpus) -> dict:
    return {key.split("#")[0]: text for key, text in corpus.documents["train"]}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-be"])
def test_a_bom_marked_utf16_or_utf32_file_is_decoded_as_such_and_said_once(tmp_path, caplog, encoding):
    bom = {"utf-16-be": b"\xfe\xff", "utf-32-be": b"\x00\x00\xfe\xff"}.get(encoding, b"")
    cfg = corpus_of(tmp_path, {"wide.txt": bom + TEXT.encode(encoding), "plain.txt": TEXT.encode()})
    with caplog.at_level(logging.INFO, logger="clex"):
        read = texts(load_corpus(cfg))
    assert read["wide.txt"][: len(TEXT) // 2] == read["plain.txt"][: len(TEXT) // 2] == TEXT[: len(TEXT) // 2]
    said = [r.getMessage() for r in caplog.records if "byte-order mark" in r.getMessage()]
    assert len(said) == 1 and "wide.txt (UTF-" in said[0] and "plain.txt" not in said[0], said


def test_a_utf8_file_reads_as_text_mode_read_it(tmp_path):
    raw = "\ufeffa\r\nb\rc\n".encode() + TEXT.encode()
    cfg = corpus_of(tmp_path, {"a.txt": raw})
    whole = "".join(dict(load_corpus(cfg).documents[s])[f"a.txt#{s}"] for s in ("train", "validation", "test"))
    (tmp_path / "b.txt").write_bytes(raw)
    assert whole == (tmp_path / "b.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "content,why,offset",
    [
        (
            TEXT.encode() + b"\x7fELF\x02\x01\x00\x00" + bytes(range(256)),
            "is a binary file (a NUL byte",
            len(TEXT.encode()) + 6,
        ),
        (TEXT.encode() + b"caf\xe9 latin-1", "is not UTF-8 text (byte 0xe9", len(TEXT.encode()) + 3),
        (b"\xff\xfe" + TEXT.encode("utf-16-le")[:-1], "is not UTF-16 text", None),
    ],
)
def test_a_binary_or_undecodable_file_is_one_line_naming_it_and_the_offset(tmp_path, content, why, offset):
    cfg = corpus_of(tmp_path, {"bad.txt": content, "good.txt": TEXT.encode()})
    with pytest.raises(ConfigError) as error:
        load_corpus(cfg)
    message = str(error.value)
    assert f"{tmp_path / 'corpus' / 'bad.txt'} {why}" in message and "data.on_bad_file=skip" in message, message
    assert offset is None or f"byte offset {offset})" in message, message


def test_bad_files_are_skipped_and_counted_in_one_warning_on_request(tmp_path, capsys):
    cfg = corpus_of(
        tmp_path,
        {
            "a.bin": b"\x00\x01",
            "b.txt": b"\xe9t\xe9",
            "c.jsonl": b"\x00",
            "good.jsonl": (json.dumps({"text": TEXT}) + "\n").encode(),
            "good.txt": TEXT.encode(),
        },
        on_bad_file="skip",
    )
    read = texts(load_corpus(cfg))
    assert sorted(read) == ["good.jsonl:0", "good.txt"]
    warned, _ = said(capsys.readouterr().err)
    assert len(warned) == 1 and "skipped 3 file(s)" in warned[0] and "a.bin is a binary file" in warned[0], warned
    with pytest.raises(ConfigError, match="data.on_bad_file must be error or skip, got 'ignore'"):
        load_corpus(OmegaConf.merge(cfg, {"on_bad_file": "ignore"}))


def test_a_path_that_is_no_regular_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="'/dev/null' matches no regular file"):
        load_corpus(OmegaConf.merge(corpus_of(tmp_path, {}), {"paths": ["/dev/null"]}))
