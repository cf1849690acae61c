"""``invert-native bench``: run the benchmark suite of the source checkout (benchmarks/).

The suite compares invert_native with the same inversion written in PyTorch, so it needs
PyTorch, which the package itself does not; it lives in the repository's ``benchmarks/``
folder rather than in the installed package. This module only defines the command's
options and finds the suite: ``--suite DIR``, else ``$INVERT_NATIVE_BENCHMARKS``, else a
``benchmarks/`` folder in the current directory or above it, else next to the package's
own source (editable installs).

Exit status: 0 every row validated; 1 a row did not validate (or failed); 2 bad options or
the run cannot start (no suite, no PyTorch, no CUDA, ``--out`` not a writable folder);
130 interrupted (Ctrl-C: the rows finished so far are written, marked as interrupted).
"""

from __future__ import annotations

import argparse
import os
import sys

from ._argtypes import real_number, whole_number

_PACKAGE = "invert_bench"
EXIT_USAGE = 2
SECTIONS = ("per_op", "per_iteration", "whole_run")  # as benchmarks/invert_bench/suite.py

DESCRIPTION = (
    "Benchmark invert_native against the same inversion written in PyTorch (same "
    "representation, objective, momentum and schedule), run alternately in one process: per op "
    "(CaffeNet layers, HOG/DSIFT ops, TV), per iteration (HOG, HOGb, DSIFT, CaffeNet conv1 ... "
    "fc8; batch 1 and 8) and whole runs. Every row validates (both sides agree) before it is "
    "timed. Writes a JSON and a Markdown report to --out and prints the table. Needs PyTorch "
    "and the source checkout's benchmarks/ folder.")

EPILOG = """\
examples:
  invert-native bench --quick                     CI smoke run (tiny sizes; not measurements)
  invert-native bench                             the full run (tens of minutes)
  invert-native bench --only per_iteration --threads 4 --out results/bench-4t
  invert-native bench --device cuda               CuPy vs PyTorch CUDA (CUDA events)

exit status: 0 every row validated, 1 a row did not validate (or failed), 2 bad options or the
run cannot start (no suite, no PyTorch, no CUDA, --out not a writable folder), 130
interrupted (Ctrl-C: the rows finished so far are written).
"""


# 0 would be an easy typo for "all cores": that is the default, so the error says so
_threads = whole_number(1, hint="(leave --threads out for all cores)")
_seed = whole_number(0)
_budget = real_number(0.0, strict=True)


def _sections(text: str) -> str:
    """--only: comma-separated section names, checked (an empty list is an error, not "all")."""
    names = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not names:
        raise argparse.ArgumentTypeError(
            f"no section given ({text!r}): choose from {', '.join(SECTIONS)} (comma-separated; "
            "leave --only out for all)")
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(map(repr, unknown))}: choose from "
            f"{', '.join(SECTIONS)}")
    return ",".join(names)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repetitions (CI smoke run, well under a minute); "
                        "its numbers are not measurements")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: NumPy arrays vs PyTorch CPU tensors; cuda: CuPy arrays vs "
                        "PyTorch CUDA tensors, timed with CUDA events (default: cpu)")
    p.add_argument("--threads", type=_threads, default=None,
                   help="threads of both libraries, >= 1 (default: os.cpu_count())")
    p.add_argument("--out", default=os.path.join("results", "bench"),
                   help="output folder for the JSON and Markdown, created before anything "
                        "runs (default: results/bench)")
    p.add_argument("--only", type=_sections, default=None,
                   help="comma-separated sections to run: per_op, per_iteration, whole_run "
                        "(default: all)")
    p.add_argument("--budget", type=_budget, default=3.0,
                   help="seconds of timing per row, at least 15 alternating pairs (default: 3)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the random CaffeNet weights, >= 0 (default: 0)")
    p.add_argument("--note", action="append", default=None,
                   help="a line added to the report (e.g. 'machine shared with other jobs'); "
                        "repeatable")
    p.add_argument("--suite", default=None,
                   help="the benchmarks/ folder holding the suite (default: found, see "
                        "invert_native.bench)")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an unexpected error")


def _candidates(explicit):
    if explicit:
        yield explicit
        return
    env = os.environ.get("INVERT_NATIVE_BENCHMARKS")
    if env:
        yield env
    here = os.path.abspath(os.getcwd())
    while True:
        yield os.path.join(here, "benchmarks")
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    src = os.path.dirname(os.path.abspath(__file__))  # python/invert_native in a checkout
    yield os.path.join(src, os.pardir, os.pardir, "benchmarks")


def find_suite(explicit: str | None = None) -> str:
    """The benchmarks/ folder holding the suite, or a RuntimeError saying where we looked."""
    tried = []
    for d in _candidates(explicit):
        d = os.path.normpath(d)
        tried.append(d)
        if os.path.isfile(os.path.join(d, _PACKAGE, "__init__.py")):
            return d
    raise RuntimeError(
        "invert-native bench: the benchmark suite (benchmarks/invert_bench) was not found; it "
        "ships with the source checkout, not the installed package. Run the command from the "
        "checkout, or pass --suite /path/to/checkout/benchmarks (or set "
        f"INVERT_NATIVE_BENCHMARKS). Looked in: {', '.join(dict.fromkeys(tried))}")


def run(args: argparse.Namespace) -> int:
    """Run the suite with parsed options; returns the exit status."""
    try:
        suite_dir = find_suite(args.suite)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError:
        print("invert-native bench: PyTorch is needed for the baseline (pip install torch)",
              file=sys.stderr)
        return 2
    if suite_dir not in sys.path:
        sys.path.insert(0, suite_dir)
    from invert_bench import suite  # noqa: E402  (found above)

    return suite.run(args)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, as the ``invert-native`` command prints them."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None, suite_dir: str | None = None) -> int:
    """Entry point of benchmarks/run.py and ``python -m invert_bench``."""
    parser = _Parser(prog="invert-native bench", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if suite_dir and not args.suite:
        args.suite = suite_dir
    try:
        return run(args)
    except KeyboardInterrupt:  # before the suite's own handler was in place
        if args.debug:
            raise
        print("invert-native bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"invert-native bench: error: {type(exc).__name__}: {text} (--debug shows the "
              "traceback)", file=sys.stderr)
        return 1
