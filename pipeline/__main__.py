"""``python -m pipeline``: the ``pipeline`` command (``python -m pipeline train``, ``--help``)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
