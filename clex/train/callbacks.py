"""The callbacks of every stage: stop on a non-finite loss, and the progress a run shows (Lightning's bar
on stderr on a terminal; elsewhere one line every 30 s)."""

import contextlib
import logging
import sys
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

log = logging.getLogger("clex")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


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
