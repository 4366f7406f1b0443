"""``python -m gdjax``: the ``gdjax`` command (see :mod:`gdjax.cli`)."""

import sys

from gdjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
