"""Long-context throughput and memory, rope against clex side by side in one process: training
tokens/s and peak memory at L, then evaluation tokens/s and peak memory at each length (full
sequence, or chunked through the KV cache with --chunk-size). Meant for a GPU; runs anywhere.

    python benchmarks/long_context.py --device cuda --precision bf16 --train-length 2048 \\
        --eval-lengths 2048,4096,8192,16384 model.hidden_size=768 model.intermediate_size=2048 \\
        model.num_layers=12 model.num_heads=12          # ~100M parameters with byte tokens
    python benchmarks/long_context.py                   # small CPU defaults
    python benchmarks/long_context.py --smoke           # tiny: checks that it runs

Extra arguments are experiment overrides (model group and size, strategy.max_scale). Peak memory is
CUDA only. Single runs on a shared 2-core CPU vary by ~10%.
"""

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from common import SMOKE_MODEL
from ode_overhead import build

import clex
from clex.commands import CONFIG_DIR
from clex.config.compose import single_config
from clex.eval.perplexity import sequence_nll
from clex.train.experiment import strategy_options
from clex.train.module import next_token_loss


def autocast(device: str, precision: str):
    return torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def peak_mib(device: str):
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def reset_peak(device: str):
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def train_throughput(models, args, vocab: int, max_scale: int):
    """Median tokens/s of optimiser steps (AdamW) at --train-length; clex cycles t = 1 .. t_max."""
    L, B = args.train_length, args.batch_size
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, vocab, (B, L + 1), generator=generator).to(args.device)
    positions = torch.arange(L, dtype=torch.float32)
    rows = {}
    for name, model in models.items():
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        rotary, seconds = clex.rotary_module(model), []
        reset_peak(args.device)
        for step in range(args.steps + 2):
            scale = 1.0 + step % max_scale if name == "clex" else 1.0
            sync(args.device)
            start = time.perf_counter()
            with rotary.training_scale(scale, positions), autocast(args.device, args.precision):
                loss = next_token_loss(model, batch)
            loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            sync(args.device)
            if step >= 2:
                seconds.append(time.perf_counter() - start)
        rows[name] = (B * L / statistics.median(seconds), peak_mib(args.device))
        del optimiser
    return rows


def eval_throughput(model, args, length: int, vocab: int):
    sequence = torch.randint(0, vocab, (1, length + 1), generator=torch.Generator().manual_seed(1))
    reset_peak(args.device)
    with autocast(args.device, args.precision):
        sequence_nll(model, sequence, length + 1, args.chunk_size)  # warm-up (and the clex grid solve)
        sync(args.device)
        start = time.perf_counter()
        _, count = sequence_nll(model, sequence, length + 1, args.chunk_size)
        sync(args.device)
    return count / (time.perf_counter() - start), peak_mib(args.device)


def mib(value):
    return f"{value:.0f}" if value is not None else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["bf16", "32"], default="bf16" if torch.cuda.is_available() else "32")
    parser.add_argument("--train-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-lengths", default="128,512,2048")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: checks that it runs")
    args, overrides = parser.parse_known_args()
    if args.smoke:
        args.train_length, args.batch_size, args.steps, args.eval_lengths = 32, 2, 2, "32,64"
        overrides = [*SMOKE_MODEL, "strategy.max_scale=3", *overrides]
    cfg = single_config(CONFIG_DIR, [*overrides, f"train.length={args.train_length}"])
    options = strategy_options(cfg.strategy)
    models = {"rope": build("rope", cfg).to(args.device), "clex": build("clex", cfg, **options).to(args.device)}
    size = sum(p.numel() for p in models["rope"].parameters())
    vocab = models["rope"].config.vocab_size
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"{device_name}, {args.precision}, {cfg.model.name} {cfg.model.num_layers}x{cfg.model.hidden_size} "
        f"({size / 1e6:.1f}M parameters), L={args.train_length}, batch {args.batch_size}, "
        f"attention {models['rope'].config._attn_implementation}, chunk {args.chunk_size or 'none'}"
    )
    train = train_throughput(models, args, vocab, int(cfg.strategy.max_scale))
    print("\n| training at L | tokens/s | peak MiB | / rope tokens/s |\n|---|---|---|---|")
    for name, (speed, peak) in train.items():
        print(f"| {name} | {speed:,.0f} | {mib(peak)} | {speed / train['rope'][0]:.3f} |")
    print("\n| evaluation length | strategy | tokens/s | peak MiB |\n|---|---|---|---|")
    for length in [int(n) for n in args.eval_lengths.split(",")]:
        for name, model in models.items():
            try:
                speed, peak = eval_throughput(model, args, length, vocab)
                print(f"| {length} | {name} | {speed:,.0f} | {mib(peak)} |")
            except torch.OutOfMemoryError:
                print(f"| {length} | {name} | out of memory | - |")
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
