"""The LightningModule: a patched causal LM trained with the strategy's sampled t and positions."""

import math
import time

import lightning as L
import torch
import torch.nn.functional as F

from clex.rope.patch import rotary_module
from clex.rope.samplers import POSITION_SAMPLERS, build_scale_sampler


def next_token_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean NLL of ids[:, 1:] given ids[:, :-1] (float32 logits whatever the precision)."""
    logits = model(input_ids=ids[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up to 1, then cosine decay to min_ratio at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LongContextLM(L.LightningModule):
    """``optim``: lr, ode_lr (None: lr; 0: the ODE frozen at its initial weights), weight_decay, warmup_steps,
    steps, betas, min_lr_ratio (the cosine's floor, a fraction of the peak).
    ``sampling``: the config's ``sampler`` section, the names and options of the scale sampler (t) and of the
    position sampler, used when the rope strategy samples t. (``self.trainer.strategy`` is Lightning's.)"""

    def __init__(self, model, optim, sampling, seed: int, max_scale: float | None = None):
        super().__init__()
        self.model = model
        self.optim = optim
        if optim.get("ode_lr") == 0:  # "does the ODE matter?": no gradient, no update, z(t) stays log ntk(t)
            for p in rotary_module(model).strategy.parameters():
                p.requires_grad_(False)
        if rotary_module(model).strategy.samples_scale:  # t is drawn from [1, max_scale] (t_max)
            self.scale_sampler = build_scale_sampler(sampling.scale, max_scale, sampling.scale_options)
            self.position_sampler = POSITION_SAMPLERS.get(sampling.position)()
        self.generator = torch.Generator().manual_seed(seed)
        self.seconds_before = 0.0  # training time of the run before a resume (from its checkpoint)
        self._started = time.time()

    @property
    def rotary(self):  # a property, not a submodule: its weights are saved once, under model.
        return rotary_module(self.model)

    @property
    def rope_strategy(self):
        return self.rotary.strategy

    def step_scale_and_positions(self, length: int):
        if not self.rope_strategy.samples_scale:
            return self.rope_strategy.scale_for_length(length), torch.arange(length, dtype=torch.float32)
        scale = self.scale_sampler(self.generator)
        return scale, self.position_sampler(length, scale, self.rope_strategy.original_length, self.generator)

    def training_step(self, batch, batch_idx):
        scale, positions = self.step_scale_and_positions(batch.shape[1] - 1)
        with self.rotary.training_scale(scale, positions):
            loss = next_token_loss(self.model, batch)
        ode = [p for p in self.rope_strategy.parameters() if p.requires_grad]
        if ode and scale == 1.0:  # DDP needs every parameter in the graph; at t = 1 the ODE is not (gradient 0)
            loss = loss + 0.0 * sum(getattr(p, "to_local", lambda p=p: p)().sum() for p in ode)  # FSDP: the local shard
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/scale", scale)
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss = next_token_loss(self.model, batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=batch.shape[0], sync_dist=True)

    def on_validation_epoch_end(self):
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.log("val/ppl", torch.exp(loss))

    def configure_optimizers(self):
        ode = [p for p in self.rope_strategy.parameters() if p.requires_grad]
        ode_ids = {id(p) for p in ode}
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad and id(p) not in ode_ids:
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if ode:
            ode_lr = self.optim.lr if self.optim.get("ode_lr") is None else self.optim.ode_lr
            groups.append({"params": ode, "weight_decay": 0.0, "lr": ode_lr})
        optimiser = torch.optim.AdamW(groups, lr=self.optim.lr, betas=tuple(self.optim.betas))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser,
            lambda step: warmup_cosine(step, self.optim.warmup_steps, self.optim.steps, self.optim.min_lr_ratio),
        )
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_model(self):
        shard = getattr(self.trainer.strategy, "shard_model", None)  # trainer=fsdp
        if shard is not None:
            shard(self.model, self.device_mesh)

    def on_fit_start(self):
        self._started = time.time()
        # a transformers checkpoint loads in eval mode and Lightning keeps the mode it finds: train with its
        # dropout on (evaluation puts the model back in eval mode)
        self.model.train()

    def on_save_checkpoint(self, checkpoint):
        checkpoint["sampler_generator"] = self.generator.get_state()
        checkpoint["train_seconds"] = self.seconds_before + time.time() - self._started

    def on_load_checkpoint(self, checkpoint):
        if "sampler_generator" in checkpoint:
            self.generator.set_state(checkpoint["sampler_generator"])
        self.seconds_before = float(checkpoint.get("train_seconds", 0.0))
