"""The miniature's "CLEX as its authors trained it" page: its sweeps, the key-token evaluators, the key-token
evaluation of every run, then docs/miniature/official.md.

    python analysis/official_report.py [--analyse-only] [--threshold 0.5] [overrides...]

Resumable: a rerun skips finished trials and runs. Overrides go to every run (e.g. trainer=gpu). The key-token
pass reruns each sweep with eval.key_tokens into its own study (<sweep>-keys): only the evaluation differs, so
every run reuses its fine-tuned model and is scored again, nothing is trained twice.
"""

import argparse
import subprocess
import sys
from pathlib import Path

from clex.commands.cli import fail
from clex.commands.miniature_report import run_sweep, study_results
from clex.errors import ConfigError

SEEDS = (0, 1, 2)
EVALUATOR = "evaluator-rope2048-seed"
EVALUATOR_RUN = [  # plain RoPE fine-tuned at 16 L0 from the seed's base: the key-token evaluator
    "strategy=rope",
    "train.length=2048",
    "train.batch_size=1",
    "data.tokenizer=bpe",
    "data.vocab_size=2048",
    "eval.lengths=[2048]",
    "trainer.enable_progress_bar=false",
]


def run_evaluators(out: Path, overrides: list[str]):
    for seed in SEEDS:
        args = [*EVALUATOR_RUN, f"seed={seed}", f"name={EVALUATOR}{seed}", f"out_dir={out}", *overrides]
        if subprocess.run([sys.executable, "-m", "clex.commands.run", *args]).returncode:
            raise ConfigError(f"the key-token evaluator of seed {seed} failed; rerun to resume it")


def main(argv=None) -> int:
    from clex.reports.official import SWEEPS_200, SWEEPS_800

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-runs", type=Path, default=Path("runs") / "miniature")
    parser.add_argument("--out", type=Path, default=Path("docs") / "miniature")
    parser.add_argument("--threshold", type=float, default=0.5, help="key tokens: the gain in nats (default 0.5)")
    parser.add_argument("--analyse-only", action="store_true", help="write the page from what is finished")
    args, overrides = parser.parse_known_args(argv)
    names = [*SWEEPS_200, *SWEEPS_800]
    evaluator = f"{args.out_runs.resolve()}/{EVALUATOR}${{seed}}/model"
    keys = f"eval.key_tokens={{evaluator: '{evaluator}', threshold: {args.threshold}}}"
    try:
        if not args.analyse_only:
            for name in names:
                run_sweep(name, args.out_runs, overrides)
            run_evaluators(args.out_runs, overrides)
            for name in names:
                run_sweep(name, args.out_runs, [*overrides, keys], study=f"{name}-keys")
    except ConfigError as error:
        return fail(error)
    from clex import io
    from clex.reports.official import write_official

    def results(name):  # the key-token pass where it has finished, else the plain one
        return study_results(name, args.out_runs, f"{name}-keys") or study_results(name, args.out_runs)

    text = write_official({name: results(name) for name in names}, args.out)
    io.write_text(args.out / "official.md", text)
    print(f"wrote {args.out / 'official.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
