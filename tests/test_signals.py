"""SIGTERM and SIGINT end a run with a non-zero status (128 + the signal) and one line saying what was interrupted,
at which step, and that the same command resumes; the step reached is saved (last.ckpt), and the same command
then finishes the run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clex.commands import run
from clex.errors import Interrupted
from clex.train.callbacks import Interruption

RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"
ARGS = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "train.length=32",
    "model.original_length=32",
    "base.steps=0",
    "train.steps=300",  # long enough that a loaded machine still signals it mid-stage
    "train.batch_size=2",
    "train.val_every=4",
    "train.val_batches=1",
    "eval.multipliers=[1,2]",
    "eval.max_tokens=128",
    "data.max_documents=100",
    "trainer.enable_progress_bar=false",
]


def interrupted_run(out: Path, signum: int) -> tuple[subprocess.CompletedProcess, Path]:
    """A run signalled once its stage 2 has written its first last.ckpt."""
    victim = subprocess.Popen(
        [sys.executable, RUN, f"out_dir={out}", *ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*/checkpoints/last.ckpt")):
        time.sleep(0.05)
    victim.send_signal(signum)
    out_text, err = victim.communicate(timeout=120)
    [checkpoint] = list(out.glob("*/checkpoints/last.ckpt"))
    return subprocess.CompletedProcess(victim.args, victim.returncode, out_text, err), checkpoint


@pytest.mark.slow  # a real run in a subprocess, signalled, then resumed
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_stage_2_is_one_line_a_non_zero_status_and_the_step_saved(tmp_path, signum):
    done, checkpoint = interrupted_run(tmp_path, signum)
    assert done.returncode == 128 + signum, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    name = signal.Signals(signum).name
    assert last.startswith(f"error: interrupted by {name} during stage 2 at step {step} of 300 (")
    assert last.endswith("saved there); what finished is kept, and the same command resumes")
    assert "Traceback" not in done.stderr and 4 <= step < 300
    assert not list(tmp_path.glob("*/results.json")) and not list(tmp_path.glob("*/checkpoints/.last.*"))
    if signum == signal.SIGTERM:  # the same command resumes from that step and finishes the run
        assert run.main([f"out_dir={tmp_path}", *ARGS]) == 0
        [results] = [json.loads(p.read_text()) for p in tmp_path.glob("*/results.json")]
        assert results["train"]["steps"] == 300


def test_a_signal_outside_training_is_interrupted_at_once():
    Interruption.fitting = False
    with pytest.raises(Interrupted) as error:
        Interruption.handle(signal.SIGTERM, None)
    assert str(error.value) == "interrupted by SIGTERM before training" and error.value.code == 143
    Interruption.fitting = True  # while a stage trains: noted, raised at the step boundary
    Interruption.handle(signal.SIGINT, None)
    assert Interruption.requested == signal.SIGINT
    Interruption.fitting, Interruption.requested = False, None


def test_a_signal_after_the_last_step_boundary_is_not_lost():
    """Noted while the stage trains, after its last step's boundary: the stage's end says it, not a silent 0."""
    callback = Interruption("stage 2", None)
    callback.on_fit_start(None, None)
    Interruption.handle(signal.SIGTERM, None)  # noted: a step may be under way
    with pytest.raises(Interrupted) as error:
        callback.on_fit_end(None, None)
    assert error.value.code == 143 and not Interruption.fitting
    Interruption.requested = None  # this process's next stage starts clean (on_fit_start clears it too)


def test_lightnings_own_sigterm_exit_is_said_as_ours_not_a_zero_status():
    """SIGTERM landing in validation or at an epoch's end: Lightning raises SIGTERMException, a SystemExit whose
    status is 0; the stage's fit turns it into Interrupted, with where it stopped (on_exception)."""
    from types import SimpleNamespace

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from clex.train.callbacks import signals_said

    lightning_exit = SIGTERMException()
    callback = Interruption("stage 2", None)
    callback.on_exception(SimpleNamespace(global_step=8, max_steps=300), None, lightning_exit)
    with pytest.raises(Interrupted) as error:
        with signals_said():
            raise lightning_exit
    assert error.value.code == 143 and str(error.value).startswith("interrupted by SIGTERM during stage 2 at step 8")
