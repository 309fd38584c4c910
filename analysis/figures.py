"""Paper figures and Table 1 from a collected table (see clex/commands/figures.py)."""

import sys

from clex.commands.figures import main

if __name__ == "__main__":
    sys.exit(main())
