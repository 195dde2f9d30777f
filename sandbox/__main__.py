"""`python -m sandbox`: until the sandbox lands, say so plainly instead of pretending to run."""

import sys

print("The sandbox is not built yet: see the open sandbox issue. `make test` runs what exists.", file=sys.stderr)
sys.exit(1)
