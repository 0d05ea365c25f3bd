"""``python -m objfs.cli ...``: the same as the ``objfs`` command."""

import sys

from objfs.cli import main

sys.exit(main())
