"""CLEX as its authors trained it: its sweeps, then docs/miniature/official.md (clex/commands/official_report.py)."""

import sys

from clex.commands.official_report import main

if __name__ == "__main__":
    sys.exit(main())
