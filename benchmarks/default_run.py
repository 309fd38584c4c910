"""Wall time of the zero-argument run (`python experiments/run.py`), fresh (stage 1 included) and with
the base model cached, in a temporary out_dir, side by side in one invocation.

    python benchmarks/default_run.py [--smoke] [extra overrides...]
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import SMOKE_RUN

RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"


def timed(out_dir, extra):
    start = time.time()
    done = subprocess.run(
        [sys.executable, RUN, f"out_dir={out_dir}", "trainer.enable_progress_bar=false", *extra],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    return time.time() - start


def main():
    extra = [a for a in sys.argv[1:] if a != "--smoke"]
    if "--smoke" in sys.argv[1:]:  # tiny sizes, 2 steps: checks that it runs
        extra = [*SMOKE_RUN, *extra]
    with tempfile.TemporaryDirectory() as out_dir:
        fresh = timed(out_dir, extra)
        again = timed(out_dir, extra + ["resume=false"])  # fine-tune again, not resume the finished run
    print(f"{torch.get_num_threads()} CPU threads; overrides: {' '.join(extra) or '(none)'}")
    print("| run | seconds | target |\n|---|---|---|")
    print(f"| fresh clone (stage 1 pre-training + fine-tune + eval) | {fresh:.0f} | 120 |")
    print(f"| base cached (same command again) | {again:.0f} | - |")


if __name__ == "__main__":
    main()
