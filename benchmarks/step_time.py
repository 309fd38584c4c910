"""Seconds per training step of the default model (plain RoPE, byte tokens, base.batch_size x L0, AdamW) in eager
float32, under bf16 autocast and under torch.compile, side by side in one process: what a faster kernel path
would give the zero-argument run, whose time is almost all such steps.

    python benchmarks/step_time.py [--steps 20] [--smoke] [overrides...]
"""

import argparse
import time

import torch
from common import SMOKE_MODEL

from clex.commands import CONFIG_DIR
from clex.config.compose import single_config
from clex.data.tokenizers import ByteTokenizer
from clex.models import build_model


def seconds_per_step(cfg, mode: str, steps: int) -> tuple[float, float]:
    """(the first step's seconds, compiling included; the mean of ``steps`` later ones)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, ByteTokenizer())
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.base.lr)
    forward = torch.compile(model) if mode == "compile" else model
    tokens = torch.randint(0, 256, (cfg.base.batch_size, cfg.model.original_length))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16 autocast"):
            loss = forward(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()

    start = time.time()
    step()
    first = time.time() - start
    for _ in range(3):  # warm-up
        step()
    start = time.time()
    for _ in range(steps):
        step()
    return first, (time.time() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 step, no compile: checks that it runs")
    args, overrides = parser.parse_known_args()
    if args.smoke:
        args.steps, overrides = 1, [*SMOKE_MODEL, "base.batch_size=2", "model.original_length=32", *overrides]
    cfg = single_config(CONFIG_DIR, overrides)
    print(f"{torch.get_num_threads()} CPU threads; batch {cfg.base.batch_size} x {cfg.model.original_length}")
    print("| mode | s per step | ratio to eager | first step (s) |\n|---|---|---|---|")
    eager = None
    for mode in ("eager", "bf16 autocast") + (() if args.smoke else ("compile",)):
        first, per_step = seconds_per_step(cfg, mode, args.steps)
        eager = eager or per_step
        print(f"| {mode} | {per_step:.3f} | {per_step / eager:.2f} | {first:.1f} |")


if __name__ == "__main__":
    main()
