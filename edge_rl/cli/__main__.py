"""`python -m edge_rl.cli` runs the console script."""

import sys

from edge_rl.cli import main

sys.exit(main())
