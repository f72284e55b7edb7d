"""mgdet's tests, in sub-packages that mirror mgdet's (tests/ops, tests/data, ...)."""
import os

# the checkout's root (configs/, cli.py, README.md)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
