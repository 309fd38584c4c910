"""Every file the project reads is untrusted: a malformed tokenizer.json, a safetensors header that lies, random
bytes named .parquet are one line naming the file, exit 2; a file name that is not valid UTF-8 is read like any."""

import os
import struct

import pytest
from conftest import said

from clex.commands import run
from tests.test_run import save_tiny_hf_checkpoint

EVAL_ONLY = ["train.steps=0", "eval.lengths=[16]", "eval.max_tokens=64", "trainer.enable_progress_bar=false"]


def one_line(capsys) -> str:
    _, errors = said(capsys.readouterr().err)  # a warning before it (L0 = 24) is its own line
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in errors[0], errors
    return errors[0]


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("tokenizer", "has no tokenizer transformers can load (tokenizer.json or tokenizer_config.json): KeyError"),
        ("header", "holds no model transformers can load: SafetensorError"),
        ("offset", "holds no model transformers can load: SafetensorError"),
    ],
)
def test_a_malformed_checkpoint_file_is_one_line_naming_it(tmp_path, capsys, damage, needle):
    model = tmp_path / "model"
    save_tiny_hf_checkpoint(model)
    if damage == "tokenizer":
        (model / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
    else:
        weights = model / "model.safetensors"
        data = weights.read_bytes()
        size = struct.unpack("<Q", data[:8])[0]
        if damage == "header":  # a header length past the end of the file
            data = struct.pack("<Q", 10**12) + data[8:]
        else:  # a tensor whose offsets point past the data
            header = data[8 : 8 + size].replace(b'"data_offsets":[0,', b'"data_offsets":[9999999,', 1)
            data = data[:8] + header + data[8 + size :]
        weights.write_bytes(data)
    capsys.readouterr()  # what saving the checkpoint printed
    assert run.main([f"out_dir={tmp_path / 'runs'}", "model=hf", f"model.path={model}", *EVAL_ONLY]) == 2
    err = one_line(capsys)
    assert needle in err and str(model) in err


def test_random_bytes_named_parquet_are_one_line_naming_the_file(tmp_path, capsys):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(os.urandom(5000))
    assert run.main([f"out_dir={tmp_path / 'runs'}", "data=hf", f"data.path=[{junk}]", "base.steps=0", *EVAL_ONLY]) == 2
    assert f"data.path: {junk} cannot be read as parquet (ArrowInvalid" in one_line(capsys)


def test_a_file_name_that_is_not_utf8_is_read_like_any(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(6):
        name = os.fsdecode(b"doc\xff" + str(n).encode() + b".txt")  # surrogate-escaped, as os.listdir gives it
        (corpus / name).write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    args = [
        f"out_dir={tmp_path / 'runs'}",
        "data=text",
        f"data.paths=[{corpus}/*]",
        "data.split=position",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "base.steps=2",
        "train.steps=0",
        "eval.multipliers=[1]",
        "eval.max_tokens=256",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0


def test_a_run_refused_after_it_started_leaves_no_folder_and_saved_files_honour_the_umask(tmp_path, monkeypatch):
    import clex.train.experiment as experiment
    from clex.errors import ConfigError

    args = [
        f"out_dir={tmp_path}",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "base.steps=2",
        "data.max_documents=60",
        "eval.multipliers=[1]",
        "eval.max_tokens=256",
        "trainer.enable_progress_bar=false",
    ]

    def refuse(*args, **kwargs):
        raise ConfigError("eval: refused after the run started")

    with monkeypatch.context() as patch:
        patch.setattr(experiment, "write_results", refuse)
        assert run.main([*args, "train.steps=0"]) == 2
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # no runs/<name>/config.yaml left
    old = os.umask(0o022)
    try:
        assert run.main([*args, "train.steps=2", "train.val_every=2", "train.batch_size=2"]) == 0
    finally:
        os.umask(old)
    [model] = list(tmp_path.glob("*/model"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in model.iterdir()}
    assert modes["model.safetensors"] == modes["clex_strategy.safetensors"] == 0o644, modes


def test_a_jsonl_cut_in_its_last_record_and_a_kernel_file_are_one_line(tmp_path, capsys):
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(f'{{"text": "document {n} " }}\n' for n in range(50)) + '{"text": "unfinis')
    common = [f"out_dir={tmp_path / 'runs'}", "base.steps=0", *EVAL_ONLY]
    assert run.main(["data=hf", f"data.path=[{cut}]", *common]) == 2
    assert "data.path: cut.jsonl cannot be read (ArrowInvalid" in one_line(capsys)
    assert run.main(["data=text", "data.paths=[/proc/self/pagemap]", *common]) == 2
    assert "a file of the kernel's (/proc, /sys, /dev), not data; nothing read" in one_line(capsys)
