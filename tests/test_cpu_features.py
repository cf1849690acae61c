"""The import-time check for the CPU features the core is compiled for (AVX2 + FMA).

On a CPU without them the core's first op would kill the process (SIGILL);
``import invert_native`` refuses first with an ImportError saying how to build
for the machine. The CPU is faked through a cpuinfo file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import pytest

import invert_native

HASWELL = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 fma movbe"
SANDY_BRIDGE = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 popcnt avx xsave"


def cpuinfo(tmp_path, flags):
    """A two-processor /proc/cpuinfo with the given flags."""
    path = tmp_path / "cpuinfo"
    block = "processor\t: {}\nvendor_id\t: GenuineIntel\nflags\t\t: {}\nbogomips\t: 4800.00\n\n"
    path.write_text(block.format(0, flags) + block.format(1, flags))
    return str(path)


@pytest.fixture
def linux_x86(monkeypatch):
    """Run the check as on Linux x86-64, whatever this machine is."""
    monkeypatch.delenv("INVERT_NATIVE_SKIP_CPU_CHECK", raising=False)
    monkeypatch.setattr(invert_native, "_sys", types.SimpleNamespace(platform="linux"))
    monkeypatch.setattr(os, "uname", lambda: types.SimpleNamespace(machine="x86_64"))
    return monkeypatch


def test_a_cpu_with_avx2_and_fma_passes(tmp_path, linux_x86):
    invert_native._require_cpu_features(cpuinfo(tmp_path, HASWELL))


@pytest.mark.parametrize("flags, missing", [
    (SANDY_BRIDGE, "AVX2 and FMA"),
    (SANDY_BRIDGE + " avx2", "FMA"),
    (SANDY_BRIDGE + " fma avx512f avx2x", "AVX2"),  # whole flags only: avx512f is not avx2
])
def test_a_cpu_without_them_is_refused_with_the_way_out(tmp_path, linux_x86, flags, missing):
    with pytest.raises(ImportError, match=f"this CPU lacks {missing}, which the CPU core") as info:
        invert_native._require_cpu_features(cpuinfo(tmp_path, flags))
    message = str(info.value)
    assert "INVERT_NATIVE_NATIVE_ARCH=ON" in message


def test_the_check_can_be_skipped_for_a_build_for_this_machine(tmp_path, linux_x86):
    linux_x86.setenv("INVERT_NATIVE_SKIP_CPU_CHECK", "1")
    invert_native._require_cpu_features(cpuinfo(tmp_path, SANDY_BRIDGE))


def test_a_core_built_for_this_host_is_not_checked(tmp_path, linux_x86):
    # the build writes what it compiled for; the portable wheel is x86-64-v3
    from invert_native import _build_info
    assert _build_info.CPU_TARGET == "x86-64-v3"
    linux_x86.setattr(_build_info, "CPU_TARGET", "native")
    invert_native._require_cpu_features(cpuinfo(tmp_path, SANDY_BRIDGE))


def test_nothing_is_checked_elsewhere_or_without_cpuinfo(tmp_path, linux_x86):
    path = cpuinfo(tmp_path, SANDY_BRIDGE)
    invert_native._require_cpu_features(str(tmp_path / "missing"))
    (tmp_path / "noflags").write_text("processor\t: 0\n")
    invert_native._require_cpu_features(str(tmp_path / "noflags"))
    linux_x86.setattr(os, "uname", lambda: types.SimpleNamespace(machine="aarch64"))
    invert_native._require_cpu_features(path)
    linux_x86.setattr(os, "uname", lambda: types.SimpleNamespace(machine="x86_64"))
    linux_x86.setattr(invert_native, "_sys", types.SimpleNamespace(platform="darwin"))
    invert_native._require_cpu_features(path)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                    reason="the check reads /proc/cpuinfo on Linux x86-64 only")
def test_import_refuses_before_the_core_loads(tmp_path):
    # a fresh interpreter whose /proc/cpuinfo reads as a CPU without AVX2
    fake = cpuinfo(tmp_path, SANDY_BRIDGE)
    code = textwrap.dedent(f"""
        import builtins, sys
        real_open = builtins.open
        builtins.open = lambda f, *a, **k: real_open({fake!r} if f == "/proc/cpuinfo" else f, *a, **k)
        try:
            import invert_native
        except ImportError as exc:
            print("refused:", exc)
        print("core loaded:", "invert_native._cpu" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k != "INVERT_NATIVE_SKIP_CPU_CHECK"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, cwd=str(tmp_path)).stdout
    assert "refused: invert_native: this CPU lacks AVX2 and FMA" in out, out
    assert "core loaded: False" in out, out
