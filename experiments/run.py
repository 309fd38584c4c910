"""Train and evaluate one configuration, or each of a comma list (see clex/commands/run.py).

python experiments/run.py [group=option[,option...]] [key=value[,value...]] [--cfg] [--help]"""

import sys

from clex.commands.run import main

if __name__ == "__main__":
    sys.exit(main())
