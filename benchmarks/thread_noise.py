"""The noise floor of one seed: how far the same run moves when only torch's thread count changes, and
whether ``deterministic=true`` repeats exactly. Each run is a fresh process (stage 1 included).

    python benchmarks/thread_noise.py [--threads 1,2] [--smoke] [extra overrides...]

Prints PPL per evaluation length for each thread count, the largest difference, and the difference
between two ``deterministic=true`` runs. Compare it with the seed-to-seed spread in comparison.md: a
difference between strategies below this floor is not a finding on any machine.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import SMOKE_RUN

RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"


def ppl(out_dir: Path, name: str, extra: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, RUN, f"out_dir={out_dir}", f"name={name}", "trainer.enable_progress_bar=false", *extra],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    results = json.loads((out_dir / name / "results.json").read_text())
    return {row["length"]: row["ppl"] for row in results["eval"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts to compare")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps: checks that it runs")
    args, extra = parser.parse_known_args()
    if args.smoke:
        extra = [*SMOKE_RUN, *extra]
    counts = [int(n) for n in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        # a separate out_dir per run: the cached base model would otherwise hide stage 1's share
        runs = {n: ppl(Path(tmp) / f"t{n}", f"threads{n}", extra + [f"threads={n}"]) for n in counts}
        repeats = [  # the smoke runs the code path once: its difference column is against itself
            ppl(Path(tmp) / f"d{i}", f"deterministic{i}", extra + ["deterministic=true", f"threads={counts[-1]}"])
            for i in range(1 if args.smoke else 2)
        ]
    lengths = sorted(runs[counts[0]])
    print(f"overrides: {' '.join(extra) or '(none)'}")
    print(
        "| length | "
        + " | ".join(f"threads={n}" for n in counts)
        + " | max - min | relative |"
        + " deterministic, twice: difference |"
    )
    print("|---" * (len(counts) + 4) + "|")
    for length in lengths:
        values = [runs[n][length] for n in counts]
        spread = max(values) - min(values)
        print(
            f"| {length} | "
            + " | ".join(f"{v:.5f}" for v in values)
            + f" | {spread:.1e} | {spread / min(values):.3%} | {abs(repeats[0][length] - repeats[-1][length]):.1e} |"
        )


if __name__ == "__main__":
    main()
