"""The miniature report: its sweeps, then docs/miniature/README.md (see clex/commands/miniature_report.py)."""

import sys

from clex.commands.miniature_report import main

if __name__ == "__main__":
    sys.exit(main())
