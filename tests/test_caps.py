"""What one option, one file or one record may cost is capped before anything is allocated: each refusal is one
line naming the key or the file."""

import pytest

from clex.analysis.tables import MAX_BOOTSTRAP, fit_power_law
from clex.commands import run
from clex.data.sources import text
from clex.errors import ConfigError


@pytest.mark.parametrize(
    "override,message",
    [
        ("strategy.amplification=1e6", "strategy.amplification must be a number in (0, 64], got 1000000.0"),
        ("strategy.projection_width=100000000", "strategy.projection_width must be an integer in [1, 65536] or null"),
        ("threads=100000", "threads must be an integer in [1, 1024] or null, got 100000"),
    ],
)
def test_an_option_that_would_take_the_machine_is_refused_before_anything_runs(tmp_path, capsys, override, message):
    assert run.main([f"out_dir={tmp_path}", override]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {message}") and not any(tmp_path.iterdir())


def test_a_corpus_file_over_the_cap_is_refused_by_its_size_unread(tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    with open(big, "wb") as handle:
        handle.truncate(3 * 2**20)  # sparse: its size, not its bytes
    monkeypatch.setattr(text, "MAX_FILE_BYTES", 2**20)
    with pytest.raises(ConfigError, match=r"data.paths: the corpus file .*big.txt: 3,145,728 bytes, more than"):
        text.decode_file(big)


def test_a_bootstrap_that_would_run_for_days_is_refused():
    with pytest.raises(ConfigError, match=f"--bootstrap must be from 1 to {MAX_BOOTSTRAP:,}, got 100000000"):
        fit_power_law([1e6, 2e6, 1e6, 2e6], [128, 128, 256, 256], [300, 320, 600, 650], bootstrap=100_000_000)


def test_a_gzipped_jsonl_of_one_huge_line_is_refused_in_a_streamed_pass(tmp_path, monkeypatch):
    import gzip

    from clex.data.sources import hf

    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb") as handle:
        handle.write(b'{"text": "ok"}\n')
        for _ in range(6):  # one line of 6 MiB, 6 KiB compressed
            handle.write(b"a" * 2**20)
    monkeypatch.setattr(hf, "MAX_RECORD_BYTES", 4 * 2**20)
    with pytest.raises(ConfigError, match=r"bomb.jsonl.gz line 2: a record of more than 4,194,304 bytes"):
        hf.check_records(bomb, hf.MAX_RECORD_BYTES)
    fine = tmp_path / "fine.jsonl"
    fine.write_text('{"text": "ok"}\n' * 100_000)  # many short lines across chunks
    hf.check_records(fine, 64)
