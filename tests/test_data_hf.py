"""data=hf: a `datasets` dataset on local disk (save_to_disk, parquet, jsonl, csv, arrow) gives the same
documents, keys and splits as a corpus of files does; bad paths and columns are one-line errors."""

import gzip
import json
import os
import shutil
from pathlib import Path

import datasets
import pytest
from conftest import said
from omegaconf import OmegaConf

from clex.commands import CONFIG_DIR, run
from clex.data.corpus import load_corpus, split_of
from clex.data.sources.hf import hf_documents
from clex.errors import ConfigError
from tests.conftest import FAST

FILES = sorted(Path(os.__file__).parent.glob("*.py"))[:60]
NAMES = [f.name for f in FILES]
TEXTS = [f.read_text(encoding="utf-8", errors="replace") for f in FILES]


def hf_cfg(path, **extra):
    return OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "data" / "hf.yaml"), {"path": path, **extra})


def texts_of(cfg):
    return [text for _, text, _ in hf_documents(cfg)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The same 60 documents saved with save_to_disk and written as parquet, jsonl (also gzipped) and csv."""
    datasets.disable_progress_bars()
    folder = tmp_path_factory.mktemp("hf")
    dataset = datasets.Dataset.from_dict({"text": TEXTS, "name": NAMES})
    dataset.save_to_disk(str(folder / "saved"))
    dataset.to_parquet(str(folder / "files" / "corpus.parquet"))
    dataset.to_json(str(folder / "files" / "corpus.jsonl"))
    dataset.to_csv(str(folder / "files" / "corpus.csv"), index=False)
    (folder / "files" / "corpus.jsonl.gz").write_bytes(gzip.compress((folder / "files" / "corpus.jsonl").read_bytes()))
    return folder


def test_every_format_gives_back_the_same_documents(corpus):
    arrow = sorted((corpus / "saved").glob("*.arrow"))
    for path in [
        str(corpus / "saved"),
        *(str(corpus / "files" / f"corpus.{s}") for s in ("parquet", "jsonl", "jsonl.gz", "csv")),
        [str(a) for a in arrow],
    ]:
        assert texts_of(hf_cfg(path)) == TEXTS, path
    keys = [key for key, _, _ in hf_documents(hf_cfg([str(corpus / "files" / "*.parquet")]))]
    assert keys[:2] == ["corpus.parquet/000000000", "corpus.parquet/000000001"]  # relative: no folder in the key


def test_id_field_names_the_documents_and_decides_their_split(corpus):
    loaded = load_corpus(hf_cfg(str(corpus / "saved"), id_field="name"))
    assert sorted(k for docs in loaded.documents.values() for k, _ in docs) == sorted(NAMES)
    for split, docs in loaded.documents.items():
        assert docs and all(split_of(key, 0.05, 0.05) == split for key, _ in docs), split
        assert all(text == TEXTS[NAMES.index(key)] for key, text in docs)


def test_a_dataset_dicts_splits_are_kept(tmp_path):
    parts = {"train": slice(0, 40), "valid": slice(40, 50), "test": slice(50, 60)}
    datasets.DatasetDict(
        {split: datasets.Dataset.from_dict({"text": TEXTS[part], "name": NAMES[part]}) for split, part in parts.items()}
    ).save_to_disk(str(tmp_path / "dict"))
    loaded = load_corpus(hf_cfg(str(tmp_path / "dict"), id_field="name"))
    for split, part in [("train", parts["train"]), ("validation", parts["valid"]), ("test", parts["test"])]:
        assert sorted(loaded.documents[split]) == sorted(zip(NAMES[part], TEXTS[part], strict=False)), split
    capped = load_corpus(hf_cfg(str(tmp_path / "dict"), id_field="name", max_documents=20))  # 20 of train
    assert {split: len(docs) for split, docs in capped.documents.items()} == {"train": 20, "validation": 10, "test": 10}
    capped = load_corpus(hf_cfg(str(tmp_path / "dict"), max_characters=1))  # one document of each split
    assert {split: len(docs) for split, docs in capped.documents.items()} == {"train": 1, "validation": 1, "test": 1}


def test_other_split_names_are_refused_unless_mapped(tmp_path):
    one = datasets.Dataset.from_dict({"text": TEXTS[:3]})
    datasets.DatasetDict({"train": one, "unsupervised": one}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(ConfigError, match="data.splits: .* holds the splits train, unsupervised"):
        texts_of(hf_cfg(str(tmp_path / "dict")))
    assert texts_of(hf_cfg(str(tmp_path / "dict"), splits={"unsupervised": None})) == TEXTS[:3]


def test_max_characters_and_max_documents_stop_reading_early(corpus):
    cap = sum(map(len, TEXTS[:10])) - 1  # reached by the 10th document
    for path in (str(corpus / "saved"), str(corpus / "files" / "corpus.parquet")):
        assert texts_of(hf_cfg(path, max_characters=cap)) == TEXTS[:10]
        assert texts_of(hf_cfg(path, max_documents=7)) == TEXTS[:7]


def test_the_fingerprint_follows_the_texts(corpus, tmp_path):
    changed = TEXTS[:5] + ["# changed\n" + TEXTS[5]] + TEXTS[6:]
    datasets.Dataset.from_dict({"text": changed, "name": NAMES}).save_to_disk(str(tmp_path / "changed"))
    same = load_corpus(hf_cfg(str(corpus / "saved"))).fingerprint
    assert load_corpus(hf_cfg(str(corpus / "saved"))).fingerprint == same and same["source"] == "hf"
    assert load_corpus(hf_cfg(str(tmp_path / "changed"))).fingerprint["sha256"] != same["sha256"]


def test_moving_the_saved_folder_keeps_keys_and_split(corpus, tmp_path):
    before = load_corpus(hf_cfg(str(corpus / "saved")))
    moved = shutil.copytree(corpus / "saved", tmp_path / "elsewhere" / "renamed")
    after = load_corpus(hf_cfg(str(moved)))
    assert before.documents == after.documents and before.fingerprint == after.fingerprint


def test_rows_without_a_string_text_are_skipped_and_counted(tmp_path, capsys):
    datasets.Dataset.from_dict({"text": ["a", None, "b", None]}).save_to_disk(str(tmp_path / "gaps"))
    assert texts_of(hf_cfg(str(tmp_path / "gaps"))) == ["a", "b"]
    warnings, _ = said(capsys.readouterr().err)
    assert len(warnings) == 1 and "skipped 2 row(s) whose 'text' is not a string" in warnings[0], warnings


def test_bad_paths_and_columns_name_the_key(corpus, tmp_path):
    (tmp_path / "notes.txt").write_text("plain text")
    (tmp_path / "plain").mkdir()
    for extra, message in [
        ({"text_field": "body"}, r"data.text_field: .* no column 'body'; its columns: text, name"),
        ({"id_field": "title"}, r"data.id_field: .* no column 'title'"),
        ({"path": str(tmp_path / "missing")}, r"data.path: nothing matches .*missing"),
        ({"path": None}, r"data.path is empty"),
        ({"path": str(tmp_path / "notes.txt")}, r"data.path: .*notes.txt is not one of .*\.parquet"),
        ({"path": str(tmp_path / "plain")}, r"data.path: .*plain is a folder but not one written by save_to_disk"),
    ]:
        with pytest.raises(ConfigError, match=message):
            texts_of(OmegaConf.merge(hf_cfg(str(corpus / "saved")), extra))
    with pytest.raises(ConfigError, match=r"data.text_field: .*corpus.csv has no column 'body'"):  # csv: from its rows
        texts_of(hf_cfg(str(corpus / "files" / "corpus.csv"), text_field="body"))


def test_a_bad_text_field_is_one_line_from_the_command(corpus, tmp_path, capsys):
    args = [f"out_dir={tmp_path / 'runs'}", "data=hf", f"data.path={corpus / 'saved'}", "data.text_field=body", *FAST]
    assert run.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: data.text_field:") and "'body'" in err, err


@pytest.mark.slow
def test_a_run_on_a_saved_dataset_end_to_end(corpus, tmp_path):
    args = [
        f"out_dir={tmp_path}",
        "data=hf",
        f"data.path={corpus / 'saved'}",
        *FAST,
        "eval.multipliers=[1]",
        "eval.max_tokens=256",
    ]
    assert run.main(args) == 0
    (results,) = tmp_path.glob("*/results.json")
    assert json.loads(results.read_text())["corpus"]["source"] == "hf"
