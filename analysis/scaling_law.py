"""The scaling-law fit of the extrapolation length (see clex/commands/scaling_law.py)."""

import sys

from clex.commands.scaling_law import main

if __name__ == "__main__":
    sys.exit(main())
