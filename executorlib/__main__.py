"""``python -m executorlib``: the cache command line (see :mod:`executorlib.cli`)."""

import sys

from executorlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
