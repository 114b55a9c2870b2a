"""``python -m reliant``: the same command line as the ``reliant`` script."""

from __future__ import annotations

import sys

from reliant._cli import main

if __name__ == "__main__":
    sys.exit(main())
