#!/usr/bin/env python
"""``python cli.py ...`` from a checkout: the same command line as the installed ``mgdet``."""
import sys

from mgdet.cli import main

if __name__ == "__main__":
    sys.exit(main())
