"""``python -m pipeline``: the ``pipeline`` command (``python -m pipeline train``, ``--help``)."""

import sys

from pipeline.cli import main

sys.exit(main())
