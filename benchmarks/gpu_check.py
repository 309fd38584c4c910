"""Every GPU path in one command, nothing downloaded: a ~100M-parameter Llama built from a config (random weights).

    python benchmarks/gpu_check.py [--out gpu_check.json]      # one H100: a few minutes
    python benchmarks/gpu_check.py --smoke                     # the same code on the CPU, tiny sizes, seconds

1. fine-tuning at 2k under bf16-mixed and bf16-true, rope and clex (sampled t, the ODE trained): tokens/s, the
   clex / rope ratio, peak memory;
2. evaluation at 4k-32k with SDPA, whole sequences and KV-chunked (the chunk eval.tokens_per_batch=null picks):
   tokens/s, peak memory, and the two NLLs' agreement;
3. the pipeline under trainer=fsdp with one device (experiments/run.py, tiny settings);
4. a CLEX model exported to the released format and imported again, at 16k in bf16 against float32 logits.

Writes the JSON (every number) and prints a Markdown table.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from common import SMOKE_RUN

import clex
from clex.eval.memory import plan
from clex.eval.perplexity import sequence_nll
from clex.train.module import next_token_loss

RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"
FULL = {"hidden": 768, "intermediate": 2048, "layers": 12, "heads": 12, "vocab": 32000, "train": 2048}
SMOKE = {"hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "vocab": 256, "train": 64}


def llama(size: dict, L0: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=size["vocab"],
        hidden_size=size["hidden"],
        intermediate_size=size["intermediate"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        max_position_embeddings=L0,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def patched(size, L0, strategy, device, dtype=torch.float32):
    model = llama(size, L0)
    options = {"max_scale": 16.0} if strategy == "clex" else {}
    built = clex.build_strategy(strategy, **clex.rotary_settings(model), **options)
    return clex.patch_model(model, built).to(device, dtype)


def peak(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def fine_tuning(size, device, steps: int) -> list[dict]:
    rows, L = [], size["train"]
    for precision in ("bf16-mixed", "bf16-true"):
        speeds = {}
        for strategy in ("rope", "clex"):
            dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
            model = patched(size, L // 4, strategy, device, dtype).train()
            optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)
            batch = torch.randint(0, size["vocab"], (1, L + 1), device=device)
            rotary = clex.rotary_module(model)
            autocast = torch.autocast(device.type, torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
            reset(device)
            for step in range(steps + 2):
                if step == 2:  # two warm-up steps
                    reset(device)
                    start = time.perf_counter()
                t = float(1 + step % 4) if strategy == "clex" else 1.0
                with rotary.training_scale(t, torch.arange(L, dtype=torch.float32)), autocast:
                    loss = next_token_loss(model, batch)
                loss.backward()
                optimiser.step()
                optimiser.zero_grad()
            if device.type == "cuda":
                torch.cuda.synchronize()
            speeds[strategy] = steps * L / (time.perf_counter() - start)
            rows.append(
                {
                    "precision": precision,
                    "strategy": strategy,
                    "tokens_per_s": speeds[strategy],
                    "peak_mib": peak(device),
                    "loss": float(loss.detach()),
                }
            )
        rows[-1]["clex_over_rope"] = speeds["clex"] / speeds["rope"]
    return rows


def evaluation(size, device, lengths: list[int], budget: float) -> list[dict]:
    rows = []
    model = patched(size, size["train"], "clex", device, torch.bfloat16).eval()
    shape = {k: size[k] for k in ("hidden", "intermediate", "heads", "layers")}
    for length in lengths:
        sequence = torch.randint(0, size["vocab"], (1, length + 1))
        chunk = plan(shape, length, budget, act_bytes=2)[1] or max(16, length // 8)
        row = {"length": length, "chunk": chunk}
        for name, chunk_size in (("whole", None), ("chunked", chunk)):
            reset(device)
            start = time.perf_counter()
            try:
                total, count = sequence_nll(model, sequence, length + 1, chunk_size)
            except torch.OutOfMemoryError:
                row[name] = "out of memory"
                torch.cuda.empty_cache()
                continue
            row[name] = {
                "tokens_per_s": count / (time.perf_counter() - start),
                "peak_mib": peak(device),
                "nll": total / count,
            }
        if isinstance(row.get("whole"), dict) and isinstance(row.get("chunked"), dict):
            row["nll_difference"] = abs(row["whole"]["nll"] - row["chunked"]["nll"])
        rows.append(row)
    return rows


def fsdp_run(device, smoke: bool) -> dict:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                RUN,
                f"out_dir={out}",
                "trainer=fsdp",
                "trainer.devices=1",
                f"trainer.accelerator={accelerator}",
                "trainer.enable_progress_bar=false",
                *SMOKE_RUN,
            ],
            capture_output=True,
            text=True,
        )
        results = [json.loads(p.read_text()) for p in Path(out).glob("*/results.json")]
    return {
        "exit_code": done.returncode,
        "seconds": time.perf_counter() - start,
        "ppl": [row["ppl"] for row in results[0]["eval"]] if results else None,
        "error": done.stderr.strip().splitlines()[-1] if done.returncode and done.stderr.strip() else None,
    }


def official_import(size, device, length: int) -> dict:
    from clex.checkpoints.official import load_official, save_official

    model = patched(size, size["train"] // 4, "clex", torch.device("cpu"))
    with torch.no_grad():
        clex.rotary_module(model).strategy.down.weight.normal_(0, 0.01)  # an ODE that has learnt something
    ids = torch.randint(0, size["vocab"], (1, length), device=device)
    with tempfile.TemporaryDirectory() as folder:
        save_official(model, folder)
        logits = {}
        for dtype in (torch.float32, torch.bfloat16):
            loaded = load_official(folder).to(device, dtype).eval()
            with torch.no_grad():
                logits[dtype] = loaded(input_ids=ids).logits[0, -256:].float()
            del loaded
    error = (logits[torch.bfloat16] - logits[torch.float32]).abs()
    agree = (logits[torch.bfloat16].argmax(-1) == logits[torch.float32].argmax(-1)).float().mean()
    return {
        "length": length,
        "max_abs_logit_error": float(error.max()),
        "mean_abs_logit_error": float(error.mean()),
        "top1_agreement": float(agree),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that it runs")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    size = SMOKE if args.smoke else FULL
    lengths = [128, 256] if args.smoke else [4096, 8192, 16384, 32768]
    budget = 2**28 if args.smoke else 0.5 * torch.cuda.mem_get_info()[0]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report = {
        "device": name,
        "torch": torch.__version__,
        "model": {**size, "parameters": sum(p.numel() for p in llama(size, 128).parameters())},
        "fine_tuning": fine_tuning(size, device, steps=2 if args.smoke else 10),
        "evaluation": evaluation(size, device, lengths, budget),
        "fsdp": fsdp_run(device, args.smoke),
        "official_import": official_import(size, device, 256 if args.smoke else 16384),
    }
    args.out.write_text(json.dumps(report, indent=1))
    print(
        f"{name}, torch {torch.__version__}, Llama {size['layers']}x{size['hidden']} "
        f"({report['model']['parameters'] / 1e6:.1f}M parameters, random weights); {args.out}"
    )
    print(
        "\n| fine-tuning at L | precision | strategy | tokens/s | peak MiB | clex / rope |\n|---|---|---|---|---|---|"
    )
    for r in report["fine_tuning"]:
        ratio = f"{r['clex_over_rope']:.3f}" if "clex_over_rope" in r else "-"
        print(
            f"| {size['train']} | {r['precision']} | {r['strategy']} | {r['tokens_per_s']:,.0f} | "
            f"{r['peak_mib'] or '-'} | {ratio} |"
        )
    print("\n| evaluation length | scoring | tokens/s | peak MiB | NLL |\n|---|---|---|---|---|")
    for r in report["evaluation"]:
        for kind in ("whole", "chunked"):
            cell = r[kind]
            label = kind if kind == "whole" else f"KV chunks of {r['chunk']}"
            if isinstance(cell, dict):
                print(
                    f"| {r['length']} | {label} | {cell['tokens_per_s']:,.0f} | {cell['peak_mib'] or '-'} | "
                    f"{cell['nll']:.4f} |"
                )
            else:
                print(f"| {r['length']} | {label} | {cell} | - | - |")
    f, o = report["fsdp"], report["official_import"]
    print(
        f"\n| check | result |\n|---|---|\n| trainer=fsdp, one device | exit {f['exit_code']}, "
        f"{f['seconds']:.0f} s, PPL {f['ppl']} {f['error'] or ''} |"
    )
    print(
        f"| released-format import at {o['length']}, bf16 vs float32 logits | max abs error "
        f"{o['max_abs_logit_error']:.3g}, top-1 agreement {o['top1_agreement']:.3f} |"
    )
    if f["exit_code"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
