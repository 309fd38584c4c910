"""comparison.md from finished runs (see clex/commands/compare.py)."""

import sys

from clex.commands.compare import main

if __name__ == "__main__":
    sys.exit(main())
