"""Smoke test of the benchmark suite (benchmarks/): ``invert-native bench --quick`` runs on tiny
sizes and writes a JSON and a Markdown report whose rows all validated (ours and PyTorch
agree). Nothing here looks at the times: they are not measurements in quick mode.

The run uses one thread: on a shared or oversubscribed CI machine two OpenMP threads can
make every small op wait a scheduler time slice, which only makes CI slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks")


def _bench(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "invert_native.cli", "bench", "--suite", SUITE,
                           *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    require("torch")
    out = tmp_path_factory.mktemp("bench")
    proc = _bench("--quick", "--threads", "1", "--out", str(out), "--note", "CI smoke run")
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    with open(out / "bench-cpu-quick.json") as f:
        result = json.load(f)
    md = (out / "bench-cpu-quick.md").read_text()
    return result, md, proc


def test_quick_writes_json_with_every_section(quick_run):
    result, _, _ = quick_run
    assert result["quick"] is True
    assert result["machine"]["threads"] == 1
    assert result["machine"]["device"] == "cpu"
    assert result["peaks"]["sgemm"]["gflops"] > 0
    assert result["peaks"]["memory"]["gbs"] > 0
    sections = {r["section"] for r in result["rows"]}
    assert sections == {"per_op", "per_iteration", "whole_run"}
    names = [r["name"] for r in result["rows"]]
    for expected in ("CaffeNet conv1 forward", "CaffeNet fc8 backward", "CaffeNet norm1 forward",
                     "CaffeNet mpool5 backward", "regulariser tv (beta=2) value+gradient"):
        assert expected in names
    cnn_it = {(r["target"], r["batch"]) for r in result["rows"]
              if r["section"] == "per_iteration" and r.get("representation") == "CaffeNet"}
    assert {t for t, _ in cnn_it} == {"conv1", "conv3", "mpool5", "relu7", "fc8"}
    assert len({b for _, b in cnn_it}) == 2  # one restart, and restarts as a batch


def test_quick_rows_validated_and_timed(quick_run):
    result, _, _ = quick_run
    for row in result["rows"]:
        assert row["status"] == "ok", row
        if row["section"] == "whole_run":
            continue
        assert row["max_rel_diff"], row["name"]
        for key, value in row["max_rel_diff"].items():
            assert value <= row["tolerance"][key], (row["name"], key, value)
        for side in ("ours", "torch"):
            assert row[side]["n"] >= 1 and row[side]["median_s"] > 0
        assert row["ratio"] > 0


def test_quick_shallow_rows_when_available(quick_run):
    import invert_native as inv

    result, _, _ = quick_run
    reps = {r.get("representation") for r in result["rows"] if r["section"] == "per_iteration"}
    for name, cls in (("HOG", "HOG"), ("HOGb", "HOG"), ("DSIFT", "DSIFT")):
        if hasattr(inv, cls):
            assert name in reps
        else:
            assert any(name in m for m in result["missing"])


def test_quick_whole_runs_agree(quick_run):
    result, _, _ = quick_run
    whole = [r for r in result["rows"] if r["section"] == "whole_run"]
    assert any(r["representation"] == "CaffeNet" for r in whole)
    for r in whole:
        e = r["final_objective"]
        assert abs(e["ours"] - e["torch"]) <= 1e-3 * abs(e["torch"]), r


def test_quick_markdown_has_the_tables(quick_run):
    result, md, proc = quick_run
    assert "| representation | batch | ours (ms) | PyTorch (ms) | ratio |" in md
    assert "#### Per op (batch 1)" in md and "#### Whole runs" in md
    assert "quick mode" in md and "Note: CI smoke run" in md
    for row in result["rows"]:
        if row["section"] == "per_op":
            assert f"| {row['group']} {row['op']} | {row['shape']} | {row['pass']} |" in md
        else:
            assert f"| {row['name']} |" in md
    assert md.strip() in proc.stdout  # the table is printed too


def test_cuda_unavailable_fails_clearly(tmp_path):
    require("torch")
    import invert_native as inv

    if inv.cuda_available():
        pytest.skip("a CUDA device is available here")
    proc = _bench("--device", "cuda", "--quick", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "--device cuda" in proc.stderr and "cannot be used" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_missing_suite_fails_clearly(tmp_path):
    from invert_native import cli

    assert cli.main(["bench", "--suite", str(tmp_path / "nowhere")]) == 2
