#!/usr/bin/env python
"""Runs the benchmark: `python scripts/benchmarks/run.py --help` lists the sections and the flags."""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a file, Python puts this folder first on sys.path, where its modules (`pipeline`, `serving`, `common`)
    # would shadow installed top-level modules of the same names; the parent folder makes them the package instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from benchmarks.cli import main

    main()
