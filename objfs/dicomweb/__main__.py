"""``python -m objfs.dicomweb STORE [--host H] [--port N]``."""

import sys

from .cli import main

sys.exit(main())
