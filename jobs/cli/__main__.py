"""``python -m jobs.cli``: the same entry point as the ``gnomon`` script."""

import sys

from jobs.cli import main

sys.exit(main())
