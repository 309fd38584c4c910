"""The callbacks of every stage: stop on a non-finite loss, stop at a step boundary on SIGINT / SIGTERM with
last.ckpt saved there, and the progress a run shows (Lightning's bar on stderr on a terminal; elsewhere one line
every 30 s)."""

import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

from clex.errors import Interrupted

log = logging.getLogger("clex")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Interruption(L.Callback):
    """Turns SIGINT / SIGTERM into ``Interrupted``: at once outside training (reading data, evaluating: everything
    finished is on disk already, written atomically), at the next step boundary while a stage trains, with
    last.ckpt saved at that step first, so the same command resumes from it."""

    requested: int | None = None  # the signal received while a stage trains
    fitting = False

    def __init__(self, stage: str, checkpoints: Path | None):
        self.stage, self.checkpoints = stage, checkpoints

    @classmethod
    def install(cls):
        """Our handler for SIGINT and SIGTERM (the main thread only; Lightning composes its own with it)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, cls.handle)

    @classmethod
    def handle(cls, signum, frame):
        if not cls.fitting:
            raise Interrupted(signum)
        cls.requested = signum

    def on_fit_start(self, trainer, module):
        Interruption.fitting, Interruption.requested = True, None

    def on_fit_end(self, trainer, module):
        Interruption.fitting = False
        if Interruption.requested is not None:  # a signal after the last step's boundary: not lost, said now
            raise Interrupted(Interruption.requested)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if Interruption.requested is not None:
            raise Interrupted(Interruption.requested)

    def on_exception(self, trainer, module, exception):
        Interruption.fitting = False
        if not isinstance(exception, (Interrupted, SIGTERMException)):
            return
        exception.where = f"during {self.stage} at step {trainer.global_step} of {trainer.max_steps}"
        if self.checkpoints is None:
            exception.where += " (a stage without checkpoints: it starts over)"
        elif trainer.global_step > 0:
            partial = self.checkpoints / f".last.{os.getpid()}.ckpt"
            trainer.save_checkpoint(partial)
            if trainer.is_global_zero:
                os.replace(partial, self.checkpoints / "last.ckpt")
            exception.where += f" ({self.checkpoints / 'last.ckpt'} saved there)"


@contextlib.contextmanager
def signals_said():
    """A stage's fit, whose SIGTERM is always ours: Lightning ends a stage signalled outside a training step (in
    validation, at an epoch's end) with its SIGTERMException, a SystemExit whose exit status is 0, so a killed job
    looked finished. It comes out as Interrupted, with the step and the checkpoint on_exception saved."""
    try:
        yield
    except SIGTERMException as error:
        raise Interrupted(signal.SIGTERM, getattr(error, "where", "during training")) from None


class StopOnNonFinite(L.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training loss became {loss.item()} at step {trainer.global_step}")


class ProgressLine(L.Callback):
    """One line every ``interval`` seconds (and at the end) where no progress bar shows: logs, CI and
    SLURM jobs, whose stdout is not a terminal."""

    def __init__(self, stage: str, interval: float = 30.0):
        self.stage, self.interval = stage, interval

    def on_train_start(self, trainer, module):
        self.start = self.last = time.time()
        self.first_step = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now, step = time.time(), trainer.global_step
        if now - self.last < self.interval and step < trainer.max_steps:
            return
        self.last = now
        done = max(step - self.first_step, 1)
        left = (now - self.start) / done * (trainer.max_steps - step)
        loss = trainer.callback_metrics.get("train/loss")
        log.info(
            "%s: step %d/%d, loss %s, %.0f s so far, about %.0f s left",
            self.stage,
            step,
            trainer.max_steps,
            "-" if loss is None else f"{float(loss):.4f}",
            now - self.start,
            left,
        )


class StderrProgressBar(TQDMProgressBar):
    """Lightning's bar on stderr (it writes to stdout): a piped stdout holds the results table only."""

    def _on_stderr(self, make):
        with contextlib.redirect_stdout(sys.stderr):
            return make()

    def init_sanity_tqdm(self):
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return self._on_stderr(super().init_validation_tqdm)

    def init_predict_tqdm(self):
        return self._on_stderr(super().init_predict_tqdm)

    def init_test_tqdm(self):
        return self._on_stderr(super().init_test_tqdm)
