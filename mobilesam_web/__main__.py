"""`python -m mobilesam_web ...`: the same as the `mobilesam-web` command (see cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
