"""CLEX's ODE overhead: training-step time with clex against rope on the tiny default model, side by
side in one process, and each solver setting's cost and error against a dopri5 reference.

    python benchmarks/ode_overhead.py [--steps 30] [--threads 2] [--smoke] [model=llama-10m ...]

The step table splits CLEX's overhead: ``clex at t=1`` (no solve, no graph into the frequencies),
``rope, inv_freq trained`` (plain RoPE whose inv_freq is a trained leaf: the cost of back-propagating into
the rotation angles in every layer, with no ODE) and ``clex`` (that plus the ODE solve and its backward).
"""

import argparse
import math
import statistics
import time

import torch
from common import SMOKE_MODEL
from torchdiffeq import odeint

import clex
from clex.commands import CONFIG_DIR
from clex.config.compose import single_config
from clex.data.tokenizers import ByteTokenizer
from clex.models import build_model
from clex.rope.samplers import POSITION_SAMPLERS, build_scale_sampler
from clex.train.experiment import strategy_options
from clex.train.module import next_token_loss

SMOKE = [*SMOKE_MODEL, "train.length=32", "train.batch_size=2", "strategy.max_scale=3"]


def build(name, cfg, **options):
    torch.manual_seed(0)
    model = build_model(cfg.model, ByteTokenizer())
    strategy = clex.build_strategy(name, **clex.rotary_settings(model), **options)
    return clex.patch_model(model, strategy)


def step_times(cfg, steps: int):
    """Median seconds per optimiser step (forward, backward, AdamW) for rope and clex, interleaved."""
    clex_options = strategy_options(cfg.strategy)
    models = {
        "rope": build("rope", cfg),
        "clex": build("clex", cfg, **clex_options),
        "clex at t=1": build("clex", cfg, **clex_options),
        "rope, inv_freq trained": build("rope", cfg),
    }
    leaf = clex.rotary_module(models["rope, inv_freq trained"]).strategy
    inv_freq = leaf._buffers.pop("base_inv_freq")
    leaf.base_inv_freq = torch.nn.Parameter(inv_freq)  # rope's inv_freq(t) returns it: a graph into the angles
    optimisers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    L, B = cfg.train.length, cfg.train.batch_size
    batch = torch.randint(0, 257, (B, L + 1), generator=torch.Generator().manual_seed(0))
    scale_sampler = build_scale_sampler(cfg.sampler.scale, cfg.strategy.max_scale, cfg.sampler.scale_options)
    position_sampler = POSITION_SAMPLERS.get(cfg.sampler.position)()
    generator = torch.Generator().manual_seed(0)
    times = {k: [] for k in models}
    names = list(models)
    for step in range(steps + 3):
        t = scale_sampler(generator)
        positions = position_sampler(L, t, cfg.model.original_length, generator)
        for name in names[step % len(names) :] + names[: step % len(names)]:  # each model in each slot equally often
            model = models[name]
            rotary = clex.rotary_module(model)
            scale = t if name == "clex" else 1.0
            start = time.perf_counter()
            with rotary.training_scale(scale, positions if name == "clex" else torch.arange(L, dtype=torch.float32)):
                loss = next_token_loss(model, batch)
            loss.backward()
            optimisers[name].step()
            optimisers[name].zero_grad()
            if step >= 3:  # warm-up steps are not counted
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def reference(strategy, t: float) -> torch.Tensor:
    """dopri5 at rtol = atol = 1e-9 in float64 in the original t coordinate (docs/design.md, section 3)."""
    up, down = strategy.up.weight.detach().double(), strategy.down.weight.detach().double()
    d, base = strategy.rotary_dim, strategy.base
    j = torch.arange(d // 2, dtype=torch.float64)

    def log_ntk(t):
        return -(2 * j / d) * (math.log(base) + d / (d - 2) * torch.log(2 * t - 1))

    def g(t, z):
        return down @ torch.tanh(up @ (z + log_ntk(t))) - (2 * j / (d - 2)) * 2 / (2 * t - 1)

    times = torch.tensor([1.0, t], dtype=torch.float64)
    return odeint(g, log_ntk(times[0]), times, method="dopri5", rtol=1e-9, atol=1e-9)[-1]


def official_style(strategy, t: float) -> torch.Tensor:
    """The official code's solve: rk4 with step 0.01 in t, every forward."""

    def g(t, z):
        log_alpha = torch.log(2 * t - 1)
        return strategy.learned_term(z, log_alpha) + strategy.slope * 2 / (2 * t - 1)

    if t == 1:
        return torch.log(strategy.base_inv_freq) + 0 * strategy.down.weight.sum()
    times = torch.tensor([1.0, t])
    return odeint(g, torch.log(strategy.base_inv_freq), times, method="rk4", options={"step_size": 0.01})[-1]


def solver_table(cfg, repeats: int):
    t_max = float(cfg.strategy.max_scale)
    settings = [
        ("rk4", {"step_size": 0.5, "max_step_t": 1.0}),
        ("rk4", {"step_size": 0.5, "max_step_t": 2.0}),
        ("rk4", {"step_size": 0.25, "max_step_t": 1.0}),
        ("rk4", {"step_size": 0.1, "max_step_t": 0.5}),
        ("midpoint", {"step_size": 0.1, "max_step_t": 0.5}),
        ("dopri5", {"rtol": 1e-6, "atol": 1e-8}),
        ("official rk4 0.01 in t", None),
    ]
    rows = []
    for method, options in settings:
        torch.manual_seed(0)
        strategy = clex.build_strategy(
            "clex",
            rotary_dim=cfg.model.hidden_size // cfg.model.num_heads,
            base=cfg.model.rope_base,
            original_length=cfg.model.original_length,
            max_scale=t_max,
            **({"method": method, **options} if options else {}),
        )
        with torch.no_grad():
            strategy.down.weight.normal_(0, 0.3 / math.sqrt(strategy.width))
        solve = (
            (lambda t, s=strategy: official_style(s, t))
            if options is None
            else (lambda t, s=strategy: torch.log(s.inv_freq(t)))
        )
        error = max(
            float((solve(float(t)).detach().double() - reference(strategy, float(t))).abs().max())
            for t in range(2, int(t_max) + 1)
        )
        samples = []
        for _ in range(repeats):
            for t in range(1, int(t_max) + 1):  # the uniform-int sampler's t values, forward + backward
                start = time.perf_counter()
                value = solve(float(t)).sum()
                if value.requires_grad:  # at t = 1 there is nothing to solve or differentiate
                    value.backward()
                samples.append(time.perf_counter() - start)
        rows.append((method if options is None else f"{method} {options}", statistics.mean(samples), error))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: checks that it runs")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model=llama-10m train.batch_size=8")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.overrides = 2, [*SMOKE, *args.overrides]
    torch.set_num_threads(args.threads)
    cfg = single_config(CONFIG_DIR, args.overrides)
    print(
        f"model: {cfg.model.name} {cfg.model.num_layers}x{cfg.model.hidden_size}, L={cfg.train.length}, "
        f"batch {cfg.train.batch_size}, t_max {cfg.strategy.max_scale}, sampler {cfg.sampler.scale}/"
        f"{cfg.sampler.position}, {args.threads} threads, median of {args.steps} steps"
    )
    median = step_times(cfg, args.steps)
    print("\n| training step | seconds | / rope |\n|---|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds:.4f} | {seconds / median['rope']:.3f} |")
    print(
        "\n| solver (ODE solve + backward, mean over t = 1..t_max) | ms "
        "| max abs error in log inv_freq vs dopri5 1e-9 |"
    )
    print("|---|---|---|")
    for name, seconds, error in solver_table(cfg, repeats=1 if args.smoke else 3):
        print(f"| {name} | {1000 * seconds:.2f} | {error:.1e} |")


if __name__ == "__main__":
    main()
