"""``python -m kgfact``: the ``kgfact`` command."""

import sys

from kgfact.cli import main

sys.exit(main())
