"""An Optuna sweep worker (see clex/commands/sweep.py).

python sweeps/run.py sweep=NAME [study.key=value] [experiment overrides] [--summary]"""

import sys

from clex.commands.sweep import main

if __name__ == "__main__":
    sys.exit(main())
