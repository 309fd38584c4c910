"""A run folder or cache damaged between or during runs: one line, exit code 2, nothing finished lost."""

import errno
import json
import shutil

import pytest
from conftest import said

from clex.commands import run
from clex.train import callbacks
from tests.conftest import FAST

THREE_STEPS = [*FAST, "train.steps=3"]


def only_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert run.main([f"out_dir={out}", "name=r", *THREE_STEPS]) == 0
    return out


@pytest.mark.parametrize(
    "damage",
    ["strategy:\n  name: [clex\n", "seed: !!python/object/apply:os.system ['touch pwned']\n", "- 1\n- 2\n"],
    ids=["truncated", "tagged", "not-a-mapping"],
)
def test_a_damaged_config_yaml_in_the_run_folder_is_one_line_and_the_folder_untouched(
    finished, tmp_path, damage, capsys, monkeypatch
):
    folder = tmp_path / "r"
    shutil.copytree(finished / "r", folder)
    (folder / "results.json").unlink()  # not finished: it would resume into this folder
    (folder / "config.yaml").write_text(damage)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    assert run.main([f"out_dir={tmp_path}", "name=r", *THREE_STEPS]) == 2
    line = only_line(capsys)
    assert "config.yaml is damaged" in line and "resume=false" in line
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "pwned").exists()


def test_a_corrupted_results_json_rewritten_keeps_the_runs_training_time(finished, tmp_path):
    shutil.copytree(finished / "r", tmp_path / "r")
    original = json.loads((tmp_path / "r" / "results.json").read_text())
    (tmp_path / "r" / "results.json").write_text('{"schema_version": 1, "eval": [')  # cut mid-write
    assert run.main([f"out_dir={tmp_path}", "name=r", *THREE_STEPS]) == 0
    again = json.loads((tmp_path / "r" / "results.json").read_text())
    assert again["eval"] == [
        {**row, "tokens_per_second": r["tokens_per_second"]}
        for row, r in zip(original["eval"], again["eval"], strict=True)
    ]
    import torch

    checkpoint = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert again["train"]["wall_seconds"] == pytest.approx(checkpoint["train_seconds"])  # the first run's training
    assert again["wall_seconds"] >= checkpoint["train_seconds"] > 0  # not this invocation's evaluation alone


def test_a_full_disk_at_the_start_is_one_line_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    from clex import io

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "atomic_write", full)
    assert run.main([f"out_dir={tmp_path}", "name=r", *FAST]) == 2
    assert "no space left on the device" in only_line(capsys)
    assert not (tmp_path / "r").exists()


def test_a_full_disk_in_torch_save_is_one_line_and_the_next_run_resumes(tmp_path, capsys, monkeypatch):
    import torch

    save = torch.save

    def failing(*args, **kwargs):  # what torch.save raises when the disk fills under it
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", failing)
    assert run.main([f"out_dir={tmp_path}", "name=r", *FAST]) == 2
    assert "writing" in only_line(capsys)
    monkeypatch.setattr(torch, "save", save)
    assert run.main([f"out_dir={tmp_path}", "name=r", *FAST]) == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # TensorBoard's writer thread
def test_the_base_cache_deleted_during_stage_1_is_one_line_and_a_rerun_trains_it(tmp_path, capsys, monkeypatch):
    stop = callbacks.StopOnNonFinite.on_train_batch_end

    def delete_the_cache(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == 1 and (tmp_path / ".base").exists():
            shutil.rmtree(tmp_path / ".base")
        return stop(self, trainer, module, outputs, batch, batch_idx)

    args = [f"out_dir={tmp_path}", "name=r", *FAST, "base.steps=3", "trainer.log_every_n_steps=1"]
    monkeypatch.setattr(callbacks.StopOnNonFinite, "on_train_batch_end", delete_the_cache)
    assert run.main(args) == 2
    assert "vanished" in only_line(capsys)
    monkeypatch.setattr(callbacks.StopOnNonFinite, "on_train_batch_end", stop)
    assert run.main(args) == 0
    assert list((tmp_path / ".base").glob("*/model.pt"))


def test_more_cpu_ranks_than_cores_is_said_once(monkeypatch, capsys):
    import os

    from clex import errors
    from clex.commands import CONFIG_DIR
    from clex.config.compose import single_config, validate

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(errors, "WARNED", set())
    cfg = single_config(CONFIG_DIR, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"])
    validate(cfg)
    validate(cfg)
    warned = [m for m in said(capsys.readouterr().err)[0] if "trainer.devices=3" in m]
    assert len(warned) == 1 and "on 2 cores" in warned[0] and "at most 2" in warned[0]
    validate(single_config(CONFIG_DIR, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]))
    assert not [m for m in said(capsys.readouterr().err)[0] if "trainer.devices" in m]
