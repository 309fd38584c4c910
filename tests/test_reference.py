"""A run that trains nothing points at the checkpoint it evaluated instead of copying its weights; the folder
reloads with identical logits while the checkpoint is in place, and says so in one line when it has moved."""

import json
import shutil

import pytest
import torch
from test_run import save_tiny_hf_checkpoint

import clex
from clex.commands import run
from clex.errors import ConfigError

ARGS = ["model=hf", "strategy=yarn", "strategy.factor=2", "train.steps=0", "eval.multipliers=[1,2]"]
ARGS += ["eval.max_tokens=96", "data.max_documents=60", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_an_evaluation_only_run_refers_to_its_checkpoint(tmp_path):
    source = tmp_path / "ckpt"
    save_tiny_hf_checkpoint(source)
    assert run.main([f"out_dir={tmp_path / 'runs'}", f"model.path={source}", *ARGS]) == 0
    [folder] = [p.parent for p in (tmp_path / "runs").glob("*/results.json")]
    saved = folder / "model"
    assert not list(saved.glob("model*.safetensors"))  # no copy of the weights
    assert json.loads((saved / "config.json").read_text())["clex_reference"]["path"] == str(source.resolve())
    reloaded = clex.load_pretrained(saved)
    direct = clex.patch_model(
        __import__("transformers").AutoModelForCausalLM.from_pretrained(source),
        clex.build_strategy("yarn", **clex.rotary_settings(reloaded), factor=2.0),
    )
    ids = torch.randint(0, 100, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(input_ids=ids).logits, direct.eval()(input_ids=ids).logits)
    # model=hf model.path=<the run's model> evaluates it again, through the reference
    assert run.main([f"out_dir={tmp_path / 'again'}", f"model.path={saved}", *ARGS]) == 0
    shutil.move(source, tmp_path / "moved")
    with pytest.raises(ConfigError, match=rf"{saved} refers to the checkpoint {source.resolve()}, which is not there"):
        clex.load_pretrained(saved)
