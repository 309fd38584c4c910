"""Every file the project unpickles (the base-model cache, last.ckpt, Lightning's own resume load) is read
weights-only, even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: a planted pickle never runs its code."""

import os
import pickle

import pytest
import torch
from conftest import said

from clex import io
from clex.commands import run
from clex.errors import ConfigError

TINY = [
    "data.max_documents=60",
    "base.steps=1",
    "base.batch_size=2",
    "train.steps=1",
    "train.batch_size=2",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "trainer.enable_progress_bar=false",
    "eval.multipliers=[1]",
    "eval.max_tokens=64",
]


def plant(path, marker):
    """A pickle that would create ``marker`` when unpickled, in the place of ``path``."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"global_step": 1, "state_dict": {}, "x": Payload()}))


@pytest.fixture
def unsafe_env(monkeypatch):
    monkeypatch.setenv(io.FORCE_UNSAFE_LOADS, "1")


def test_the_loader_never_runs_a_pickle_and_restores_the_environment(tmp_path, unsafe_env):
    plant(tmp_path / "x.pt", tmp_path / "ran")
    with pytest.raises(ConfigError, match="x.pt cannot be read as a cache .*could run code.*; delete it$"):
        io.load_tensors(tmp_path / "x.pt", "a cache", "delete it")
    assert not (tmp_path / "ran").exists() and os.environ[io.FORCE_UNSAFE_LOADS] == "1"


def test_lightnings_own_load_is_weights_only_under_the_environment_variable(tmp_path, unsafe_env):
    from lightning.fabric.utilities.cloud_io import _load

    plant(tmp_path / "last.ckpt", tmp_path / "ran")
    with io.weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        _load(tmp_path / "last.ckpt", weights_only=True)  # what Trainer.fit(ckpt_path=..., weights_only=True) calls
    assert not (tmp_path / "ran").exists()
    torch.save({"global_step": 2}, tmp_path / "good.ckpt")
    with io.weights_only_loads():
        assert _load(tmp_path / "good.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_a_planted_base_cache_or_checkpoint_is_refused_in_one_line(tmp_path, capsys, unsafe_env):
    assert run.main([f"out_dir={tmp_path}", "name=a", *TINY]) == 0
    run_dir, (base,) = tmp_path / "a", list((tmp_path / ".base").glob("*/model.pt"))
    for planted in (base, run_dir / "checkpoints" / "last.ckpt"):
        (run_dir / "results.json").unlink(missing_ok=True)  # unfinished: the rerun reads the cache and resumes
        good = planted.read_bytes()
        plant(planted, tmp_path / "ran")
        capsys.readouterr()
        assert run.main([f"out_dir={tmp_path}", "name=a", *TINY]) == 2
        _, errors = said(capsys.readouterr().err)  # each warning its own line (L0 = L: every length within it)
        assert len(errors) == 1 and f"{planted} cannot be read as" in errors[0], errors
        assert not (tmp_path / "ran").exists() and not (run_dir / "results.json").exists()
        planted.write_bytes(good)


def sharded_checkpoint(folder):
    """A real distributed-checkpoint folder (torch's own writer, one process) with Lightning's meta.pt."""
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({"model": {"w": torch.randn(3, 4)}, "step": 3}, checkpoint_id=folder, no_dist=True)
    torch.save({"global_step": 7}, folder / "meta.pt")


def test_a_sharded_checkpoints_metadata_is_checked_before_torch_unpickles_it(tmp_path, monkeypatch):
    from clex.train.resume import checkpoint_step

    monkeypatch.setenv(io.FORCE_UNSAFE_LOADS, "1")
    sharded_checkpoint(tmp_path / "last.ckpt")
    assert checkpoint_step(tmp_path / "last.ckpt") == 7  # a genuine one passes the check
    marker = tmp_path / "pwned"
    plant(tmp_path / "last.ckpt" / ".metadata", marker)
    with pytest.raises(ConfigError, match=r"\.metadata is not a sharded checkpoint's metadata .*system is not part"):
        checkpoint_step(tmp_path / "last.ckpt")
    assert not marker.exists()


def test_every_torch_load_in_the_block_is_weights_only_even_when_it_asks_otherwise(tmp_path, monkeypatch):
    """torch's distributed checkpoint reads its non-tensor items with torch.load(weights_only=False)."""
    monkeypatch.setenv(io.FORCE_UNSAFE_LOADS, "1")
    marker = tmp_path / "pwned"
    plant(tmp_path / "item.pt", marker)
    with io.weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "item.pt", weights_only=False)
    assert not marker.exists() and os.environ[io.FORCE_UNSAFE_LOADS] == "1"
    assert torch.load.__module__ == "torch.serialization"  # restored after the block
