"""`python -m connector ...`: see connector.cli."""

import sys

from connector.cli import main

sys.exit(main(sys.argv[1:]))
