#!/usr/bin/env python
"""Run the benchmark suite: ``python benchmarks/run.py [--quick] [--device cuda] ...``.

The same as ``invert-native bench`` run from this checkout; ``--help`` lists the options.
"""

import os
import sys

from invert_native.bench import main

if __name__ == "__main__":
    sys.exit(main(suite_dir=os.path.dirname(os.path.abspath(__file__))))
