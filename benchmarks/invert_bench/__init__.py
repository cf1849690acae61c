"""invert_native's benchmark suite: our inversion against the same computation in PyTorch.

Run it with ``invert-native bench`` or ``python benchmarks/run.py`` (options: ``--help``).
Modules: :mod:`.suite` (the rows), :mod:`.torch_baseline` (the PyTorch implementation),
:mod:`.models` (the representations, built once for both sides), :mod:`.timing`,
:mod:`.machine` (SGEMM rate and memory bandwidth of this machine), :mod:`.report`.
"""

from .suite import run

__all__ = ["run"]
