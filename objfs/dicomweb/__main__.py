"""``python -m objfs.dicomweb STORE [--host H] [--port N]``."""

import sys

from objfs.cli.dicomweb import main

sys.exit(main())
