"""Loading VLFeat 0.9.21 (Debian's libvlfeat-dev) through ctypes, as the numerical reference.

Where the library is missing the tests that need it skip, unless
INVERT_NATIVE_REQUIRE_REFS=1 (as in CI): then they fail.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import pytest

_CANDIDATES = ("libvl.so.1", "libvl.so", "libvl.so.0.9.21")


def libvl() -> ctypes.CDLL:
    """The VLFeat shared library, or skip/fail the calling test."""
    names = list(_CANDIDATES)
    found = ctypes.util.find_library("vl")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    msg = "VLFeat (libvl.so, Debian package libvlfeat-dev) is not installed"
    if os.environ.get("INVERT_NATIVE_REQUIRE_REFS") == "1":
        pytest.fail(msg + " and INVERT_NATIVE_REQUIRE_REFS=1")
    pytest.skip(msg)
