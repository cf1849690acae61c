"""Reliability of the sweep commands: ``--resume`` after Ctrl-C or a crash, failed inversions
recorded while the sweep goes on, and hostile image files refused with one line.

A resumed sweep must not redo what finished and must end with the tables and figure of an
uninterrupted run: both runs here use the same seed and ``--threads 1``, so the numbers are
identical (only the ``seconds`` column of results.csv, a timing, may differ). Interruptions
are made in-process (a patched inversion raises KeyboardInterrupt after k calls) and, once,
by SIGKILL of the console script in the middle of a sweep.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import invert_native
from invert_native import cli
from invert_native.experiments import deep, shallow
from invert_native.invert import InversionDiverged

FAST = ["--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    invert_native.set_num_threads(0)  # --threads is process-wide


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()[::8, ::8]).save(d / "astro.png")
    Image.fromarray(data.camera()[100:172:2, 100:196:2]).save(d / "camera.png")
    Image.fromarray(data.coffee()[::8, ::8]).save(d / "coffee.png")
    return d


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path, drop=("seconds",)):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def sections(out):
    """report.json's sections without timings."""
    rep = json.loads((out / "report.json").read_text())
    text = json.dumps(rep["sections"], sort_keys=True)
    return json.loads(text, object_hook=lambda d: {k: v for k, v in d.items()
                                                   if k != "seconds"})


def assert_same_results(a, b):
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()
    assert read_csv(a / "results.csv") == read_csv(b / "results.csv")
    assert sections(a) == sections(b)
    with Image.open(a / "figure.png") as fa, Image.open(b / "figure.png") as fb:
        assert np.array_equal(np.asarray(fa), np.asarray(fb))


def counting(monkeypatch, module, name, stop_after=None, exc=KeyboardInterrupt):
    """Patch module.name to count its calls; raise ``exc`` on call number stop_after + 1."""
    real = getattr(module, name)
    calls = []

    def wrapped(*args, **kwargs):
        if stop_after is not None and len(calls) >= stop_after:
            raise exc()
        calls.append(args[0] if module is shallow else args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def evaluate_argv(photos, out, *extra):
    return ["evaluate", photos / "astro.png", photos / "camera.png", photos / "coffee.png",
            "--rep", "hog,hogb", "--size", "40x40", "--iterations", "30", "-o", out,
            *extra] + FAST


# ---------------------------------------------------------------------- --resume
def test_interrupted_evaluate_resumes_to_the_same_tables(photos, tmp_path, capsys,
                                                         monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run(evaluate_argv(photos, ref), capsys)[0] == 0

    calls = counting(monkeypatch, shallow, "invert_image", stop_after=4)
    code, _, err = run(evaluate_argv(photos, out), capsys)
    assert code == 130 and "interrupted" in err
    assert len(calls) == 4 and len(list((out / "images").glob("*.npz"))) == 4
    assert json.loads((out / "report.json").read_text())["status"] == "interrupted"

    # without --resume (or --force) the folder is refused
    assert run(evaluate_argv(photos, out), capsys)[0] == 2

    monkeypatch.undo()
    calls = counting(monkeypatch, shallow, "invert_image")
    code, _, err = run(evaluate_argv(photos, out, "--resume"), capsys)
    assert code == 0, err
    assert calls == ["hog", "hogb"]  # coffee's two; the four finished are read back
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["resumed"] == {"restored": 4, "run": 2}
    assert_same_results(ref, out)

    # resuming a complete run redoes nothing and changes no number
    calls.clear()
    assert run(evaluate_argv(photos, out, "--resume"), capsys)[0] == 0
    assert calls == []
    assert_same_results(ref, out)


def test_help_documents_resume(capsys):
    for command in ("demo", "evaluate", "layers"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "--resume" in out and ".npz" in out
    code, out, _ = run(["invert", "--help"], capsys)
    assert code == 0 and "--resume" not in out


def test_interrupted_demo_resumes_to_the_same_tables(tmp_path, capsys, monkeypatch):
    argv = lambda out, *extra: (["demo", "--quick", "--photos", "astronaut,camera",  # noqa
                                 "--rep", "hog,dsift", "--size", "32x40", "--iterations", "5",
                                 "-o", out, *extra] + FAST)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run(argv(ref), capsys)[0] == 0
    counting(monkeypatch, shallow, "invert_image", stop_after=1)
    code, _, err = run(argv(out), capsys)
    assert code == 130 and "--resume" in err.strip().splitlines()[-1]
    monkeypatch.undo()
    calls = counting(monkeypatch, shallow, "invert_image")
    assert run(argv(out, "--resume"), capsys)[0] == 0
    assert len(calls) == 3
    assert_same_results(ref, out)


def test_resume_on_a_new_or_empty_folder_just_runs(photos, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        code, _, err = run(evaluate_argv(photos, out, "--resume"), capsys)
        assert code == 0, err
        assert len(read_csv(out / "results.csv")) == 6


@pytest.mark.parametrize("change, setting", [
    (["--seed", "1"], "seed"),
    (["--iterations", "31"], "iterations"),
    (["--rep", "hog"], "reps"),
    (["--size", "40x48"], "size"),
    (["--restarts", "2"], "restarts"),
    (["--lambda-tv", "1"], "lambda_tv"),
])
def test_resume_refuses_other_settings(photos, tmp_path, capsys, change, setting):
    out = tmp_path / "out"
    argv = evaluate_argv(photos, out)
    argv[argv.index("--iterations") + 1] = "2"
    assert run(argv, capsys)[0] == 0
    before = (out / "results.csv").read_text()
    argv += change + ["--resume"]  # the later option wins
    code, _, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1, err
    assert f"'{setting}' differs" in lines[0] and "Traceback" not in err
    assert (out / "results.csv").read_text() == before


def test_resume_refuses_other_images_or_command(photos, tmp_path, capsys):
    mine = tmp_path / "photos"
    shutil.copytree(photos, mine)
    out = tmp_path / "out"
    argv = evaluate_argv(mine, out)
    argv[argv.index("--iterations") + 1] = "2"
    assert run(argv, capsys)[0] == 0
    fewer = [a for a in argv if a != mine / "coffee.png"] + ["--resume"]
    code, _, err = run(fewer, capsys)
    assert code == 2 and "'images.coffee' differs" in err, err
    # the same path, other pixels
    with Image.open(mine / "astro.png") as im:
        flipped = np.asarray(im)[::-1].copy()
    Image.fromarray(flipped).save(mine / "astro.png")
    code, _, err = run(argv + ["--resume"], capsys)
    assert code == 2 and "'inputs_sha256' differs" in err, err
    code, _, err = run(["demo", "--quick", "-o", out, "--resume"] + FAST, capsys)
    assert code == 2 and "`invert-native evaluate` run, not `demo`" in err, err


def test_resume_accepts_the_same_images_typed_another_way(photos, tmp_path, capsys,
                                                          monkeypatch):
    out = tmp_path / "out"
    argv = evaluate_argv(photos, out)
    argv[argv.index("--iterations") + 1] = "2"
    assert run(argv, capsys)[0] == 0
    # relative paths with a ./ and a .., from another working directory
    monkeypatch.chdir(photos)
    retyped = [f"./{a.name}" if isinstance(a, Path) and a.parent == photos else a
               for a in argv]
    retyped[retyped.index("./camera.png")] = f"../{photos.name}/camera.png"
    calls = counting(monkeypatch, shallow, "invert_image")
    code, _, err = run(retyped + ["--resume"], capsys)
    assert code == 0, err
    assert calls == []  # all six inversions read back, none redone


def test_resume_never_reads_back_another_runs_inversions(photos, tmp_path, capsys,
                                                         monkeypatch):
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert run(evaluate_argv(photos, out), capsys)[0] == 0  # seed 0: six .npz
    assert run(evaluate_argv(photos, ref, "--seed", "1"), capsys)[0] == 0
    # --force starts over with seed 1, interrupted after two; the other four .npz are seed 0's
    counting(monkeypatch, shallow, "invert_image", stop_after=2)
    assert run(evaluate_argv(photos, out, "--force", "--seed", "1"), capsys)[0] == 130
    monkeypatch.undo()
    calls = counting(monkeypatch, shallow, "invert_image")
    assert run(evaluate_argv(photos, out, "--resume", "--seed", "1"), capsys)[0] == 0
    assert len(calls) == 4
    assert_same_results(ref, out)
    # inversions without a report.json: their settings are unknown
    (out / "report.json").unlink()
    code, _, err = run(evaluate_argv(photos, out, "--resume", "--seed", "1"), capsys)
    assert code == 2 and "no report.json" in err, err


def test_interrupted_layers_resumes_to_the_same_tables(photos, tmp_path, capsys, monkeypatch):
    argv = lambda out, *extra: (["layers", photos / "astro.png", photos / "coffee.png",  # noqa
                                 "--random-weights", "--layers", "conv1,relu1",
                                 "--lambda-tv", "0.5,5", "--restarts", "2",
                                 "--iterations", "4", "-o", out, *extra] + FAST)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run(argv(ref), capsys)[0] == 0
    calls = counting(monkeypatch, deep, "invert_layer", stop_after=3)
    assert run(argv(out), capsys)[0] == 130
    monkeypatch.undo()
    calls = counting(monkeypatch, deep, "invert_layer")
    code, _, err = run(argv(out, "--resume"), capsys)
    assert code == 0, err
    assert len(calls) == 8 - 3
    assert_same_results(ref, out)


# ---------------------------------------------------------------------- failures
def test_failed_inversions_are_recorded_and_the_sweep_goes_on(photos, tmp_path, capsys,
                                                              monkeypatch):
    real = shallow.invert_image

    def flaky(name, image, *args, **kwargs):
        if name == "hogb" and image.mean() == flaky.camera_mean:
            raise InversionDiverged("the objective became nan by iteration 3")
        if name == "hog" and image.mean() == flaky.camera_mean:
            raise RuntimeError("the core ran out of memory")
        return real(name, image, *args, **kwargs)

    from invert_native.experiments.shallow import fit, to_gray

    flaky.camera_mean = fit(to_gray(np.asarray(Image.open(photos / "camera.png"))),
                            (40, 40)).mean()
    monkeypatch.setattr(shallow, "invert_image", flaky)
    out = tmp_path / "out"
    code, _, err = run(evaluate_argv(photos, out), capsys)
    assert code == 1, err
    assert "2 inversion(s) diverged or failed" in err
    rows = {(r["image"], r["representation"]): r for r in read_csv(out / "results.csv")}
    assert len(rows) == 6
    assert rows[("camera", "hogb")]["status"] == "diverged"
    assert rows[("camera", "hog")]["status"] == "failed"
    assert all(r["status"] == "ok" and r["error"] for k, r in rows.items() if k[0] != "camera")
    summary = {r["representation"]: r for r in read_csv(out / "summary.csv")}
    assert summary["hog"]["images"] == summary["hogb"]["images"] == "2"
    assert "diverged" in (out / "report.md").read_text()

    # a resumed run keeps the failures (they would fail again) and redoes nothing
    calls = counting(monkeypatch, shallow, "invert_image")
    code, _, err = run(evaluate_argv(photos, out, "--resume"), capsys)
    assert code == 1 and calls == []
    assert {(r["image"], r["representation"]): r["status"]
            for r in read_csv(out / "results.csv")} == {k: r["status"] for k, r in rows.items()}


def test_real_divergence_is_recorded(photos, tmp_path, capsys):
    out = tmp_path / "out"
    argv = evaluate_argv(photos, out, "--lambda-tv", "1e30")
    code, _, err = run(argv, capsys)
    assert code == 1, err
    assert {r["status"] for r in read_csv(out / "results.csv")} == {"diverged"}
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete"
    # the advice names the command's options, not invert()'s arguments
    message = report["sections"]["table1"]["runs"][0]["message"]
    assert "--lambda-tv" in message and "--learning-rate" in message
    assert "learning_rate" not in message and "lambda_tv" not in message


# ---------------------------------------------------------------------- hostile images
def _png_header_only(path, width, height, bit_depth=1, colour_type=0):
    """A PNG whose header claims width x height pixels, with a tiny (wrong) body."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("hostile")
    _png_header_only(d / "bomb.png", 20000, 20000)
    data = (photos / "astro.png").read_bytes()
    (d / "truncated.png").write_bytes(data[:len(data) // 2])
    (d / "corrupt.png").write_bytes(data[:60] + bytes(200) + data[260:])
    (d / "notes.png").write_text("these are my notes, not an image\n")
    (d / "folder.png").mkdir()
    return d


@pytest.mark.parametrize("name, says", [
    ("bomb.png", "decompression bomb"),
    ("truncated.png", "truncated"),
    ("corrupt.png", "corrupt"),
    ("notes.png", "not an image"),
    ("folder.png", "is a folder"),
])
@pytest.mark.parametrize("command", ["evaluate", "layers"])
def test_hostile_image_one_line_exit_2(photos, hostile, tmp_path, capsys, name, says, command):
    argv = [command, photos / "astro.png", hostile / name, "-o", tmp_path / "o"] + FAST
    if command == "layers":
        argv += ["--random-weights"]
    code, _, err = run(argv, capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("invert-native: error:"), err
    assert says in lines[0] and str(hostile / name) in lines[0]
    assert not (tmp_path / "o").exists()


def test_decompression_bomb_limit_stays_in_force(photos, tmp_path, capsys, monkeypatch):
    assert Image.MAX_IMAGE_PIXELS is not None
    # an image over the limit (Pillow warns) and over twice it (Pillow raises): both refused
    for limit in (64 * 64 - 1, 64 * 64 // 2 - 1):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        code, _, err = run(["invert", photos / "astro.png", "--rep", "hog", "-o",
                            tmp_path / "x.png"] + FAST, capsys)
        assert code == 2 and "decompression bomb" in err and err.count("\n") == 1, err
    monkeypatch.undo()
    source = (Path(cli.__file__)).read_text()
    assert "MAX_IMAGE_PIXELS = None" not in source and "MAX_IMAGE_PIXELS=None" not in source


# ---------------------------------------------------------------------- SIGKILL
def _console_script():
    here = Path(sys.executable).parent
    exe = shutil.which("invert-native", path=os.pathsep.join([str(here),
                                                              os.environ.get("PATH", "")]))
    if exe is None:
        pytest.skip("the invert-native console script is not installed next to this Python")
    return exe


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_sweep_resumes(photos, tmp_path, capsys):
    exe = _console_script()
    out, ref = tmp_path / "killed", tmp_path / "ref"
    argv = ["evaluate", str(photos / "astro.png"), str(photos / "camera.png"),
            str(photos / "coffee.png"), "--rep", "hog,dsift", "--size", "48x48",
            "--iterations", "1500", "--threads", "1", "--quiet"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    p = subprocess.Popen([exe] + argv + ["-o", str(out)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            if len(list((out / "images").glob("*.npz"))) >= 2:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    finished = {f.name: f.stat().st_mtime_ns for f in (out / "images").glob("*.npz")}
    if p.returncode != -signal.SIGKILL or len(finished) >= 6:
        pytest.skip("the sweep ended before the kill landed (machine faster than expected)")
    assert finished
    assert json.loads((out / "report.json").read_text())["status"] == "running"
    # what a kill in the middle of an atomic write leaves (also when it lands there here)
    (out / "images" / ".camera__dsift.png.k1ll3d.tmp").write_bytes(b"half a PNG")

    code, _, err = run(argv + ["-o", out, "--resume"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"]["restored"] == len(finished)
    for name, mtime in finished.items():  # read back, not redone
        assert (out / "images" / name).stat().st_mtime_ns == mtime
    assert run(argv + ["-o", ref], capsys)[0] == 0
    assert_same_results(ref, out)
    assert not list(out.rglob("*.tmp"))
