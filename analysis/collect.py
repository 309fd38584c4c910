"""Runs (and a study's trials) into one tidy CSV and a per-variant summary (see clex/commands/collect.py)."""

import sys

from clex.commands.collect import main

if __name__ == "__main__":
    sys.exit(main())
