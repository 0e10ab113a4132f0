#!/usr/bin/env python
"""Command line of the transfer-learning pipeline: see `python run_pipeline.py --help`."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
