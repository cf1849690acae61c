"""``python -m invert_bench`` (benchmarks/ on sys.path): the same as ``invert-native bench``."""

import sys

from invert_native.bench import main

sys.exit(main())
