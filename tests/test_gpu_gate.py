"""The rule that decides whether ``gpu`` tests run, skip or fail (conftest), on the CPU.

Skip only where no GPU exists; where one exists but CuPy or the CUDA core is
missing, fail with the reason. The probes are replaced by fakes here.
"""

from __future__ import annotations

import subprocess
import types

import pytest

import conftest
import invert_native
from invert_native import CudaStatus

NO_CUPY = CudaStatus(False, "CuPy is not installed (pip install ...)")
NOT_BUILT = CudaStatus(False, "the CUDA core was not built")
NO_DEVICE = CudaStatus(False, "no CUDA device is visible")
READY = CudaStatus(True, "1 CUDA device(s), CUDA runtime 13000")


@pytest.mark.parametrize("status, present, action", [
    (READY, "", "run"),
    (READY, "the CUDA core counts 1 device(s)", "run"),
    (NO_CUPY, "the CUDA core counts 1 device(s)", "fail"),
    (NOT_BUILT, "device node(s) /dev/nvidia0", "fail"),
    (NO_DEVICE, "nvidia-smi -L: GPU 0: NVIDIA H100", "fail"),
    (NO_CUPY, "", "skip"),
    (NOT_BUILT, "", "skip"),
    (NO_DEVICE, "", "skip"),
])
def test_gate_decision(status, present, action):
    got, why = conftest.gpu_gate(status, present)
    assert got == action
    if action != "run":
        assert status.reason in why  # the reason says what is missing
    if action == "fail":
        assert present in why


@pytest.fixture
def no_probes(monkeypatch):
    """A machine with no CUDA core and no driver, unless a test says otherwise."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(conftest, "core_device_count", lambda: None)
    monkeypatch.setattr(conftest.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(conftest.shutil, "which", lambda name: None)
    return monkeypatch


def test_no_core_no_driver_means_no_gpu(no_probes):
    assert conftest.gpu_present() == ""


def test_a_core_that_counts_devices_means_a_gpu(no_probes):
    no_probes.setattr(conftest, "core_device_count", lambda: 2)
    assert conftest.gpu_present() == "the CUDA core counts 2 device(s)"


def test_device_nodes_mean_a_gpu_even_when_the_core_counts_none(no_probes):
    no_probes.setattr(conftest, "core_device_count", lambda: 0)
    no_probes.setattr(conftest.glob, "glob",
                      lambda pattern: ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm"])
    assert conftest.gpu_present() == "device node(s) /dev/nvidia0"


def test_control_nodes_alone_are_no_gpu(no_probes):
    no_probes.setattr(conftest.glob, "glob", lambda pattern: ["/dev/nvidiactl", "/dev/nvidia-uvm"])
    assert conftest.gpu_present() == ""


@pytest.mark.parametrize("stdout, expected", [
    ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)\n", "nvidia-smi -L: GPU 0: NVIDIA H100"),
    ("No devices were found\n", ""),
])
def test_nvidia_smi_listing(no_probes, stdout, expected):
    no_probes.setattr(conftest.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    no_probes.setattr(conftest.subprocess, "run",
                      lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=stdout, stderr=""))
    got = conftest.gpu_present()
    assert got.startswith(expected) and bool(got) == bool(expected)


def test_hidden_gpus_are_no_gpu(no_probes):
    no_probes.setattr(conftest, "core_device_count", lambda: 1)
    no_probes.setattr(conftest.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    for hidden in ("", "-1"):
        no_probes.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert conftest.gpu_present() == ""


def _gpu_item():
    marker = object()
    return types.SimpleNamespace(get_closest_marker=lambda name: marker if name == "gpu" else None)


@pytest.mark.parametrize("present, outcome", [
    ("the CUDA core counts 1 device(s)", pytest.fail.Exception),
    ("", pytest.skip.Exception),
])
def test_the_hook_fails_or_skips(monkeypatch, present, outcome):
    monkeypatch.setattr(conftest, "_gate", None)  # restored afterwards: the session's own answer
    monkeypatch.setattr(invert_native, "cuda_available", lambda: NO_CUPY)
    monkeypatch.setattr(conftest, "gpu_present", lambda: present)
    with pytest.raises(outcome, match="CuPy is not installed"):
        conftest.pytest_runtest_setup(_gpu_item())
    # tests without the marker are left alone
    conftest.pytest_runtest_setup(types.SimpleNamespace(get_closest_marker=lambda name: None))
