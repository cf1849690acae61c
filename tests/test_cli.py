"""End-to-end tests of the ``invert-native`` command line (demo, invert, evaluate, layers).

Each subcommand runs in-process through ``cli.main(argv)`` on small images with few
iterations, and the files it writes are checked: PNGs decode with Pillow, CSV and JSON
parse, errors are finite and in range. Bad inputs must give exit status 2 and one line on
stderr without a traceback. The console script itself is run as a subprocess (one
inversion, and a Ctrl-C in the middle of a sweep: exit 130, finished results kept).

The runs use ``--threads 1``: on a machine shared with other jobs, OpenMP's busy-waiting
threads can slow small images down by orders of magnitude, and these tests time nothing.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import invert_native
from invert_native import cli

FAST = ["--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    invert_native.set_num_threads(0)  # --threads is process-wide; give the other tests theirs


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Small test images on disk: colour JPEG, grey PNG, RGBA PNG (different sizes)."""
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    astro = data.astronaut()[::8, ::8]           # 64 x 64 x 3
    camera = data.camera()[100:172:2, 100:196:2]  # 36 x 48 grey
    coffee = data.coffee()[::8, ::8]             # 50 x 75 x 3
    rgba = np.dstack([coffee, np.full(coffee.shape[:2], 255, np.uint8)])
    Image.fromarray(astro).save(d / "astro.jpg", quality=95)
    Image.fromarray(camera).save(d / "camera.png")
    Image.fromarray(rgba, "RGBA").save(d / "coffee.png")
    return d


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path, size=None, mode=None):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        if size is not None:
            assert im.size == size  # (W, H)
        if mode is not None:
            assert im.mode == mode
        return np.asarray(im)


def assert_error(value, lo=0.0, hi=3.0):
    v = float(value)
    assert math.isfinite(v) and lo <= v <= hi, value


def assert_folder(out: Path, n_rows: int, alone=()):
    """The documented layout: report.md/json, results.csv, summary.csv, figure.png, images/.
    Every row has the N_Phi error but those of the images in ``alone`` (the only image of
    their section: no N_Phi)."""
    for name in ("report.md", "report.json", "results.csv", "summary.csv", "figure.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete"
    rows = read_csv(out / "results.csv")
    assert len(rows) == n_rows
    for r in rows:
        assert r["status"] == "ok"
        assert_error(r["error_relative"])
        if r["image"] in alone:
            assert r["error"] == ""
        else:  # N_Phi at rounding noise (identical images) once made this 1e7
            assert_error(r["error"], hi=10.0)
        assert_png(out / r["file"])
    assert_png(out / "figure.png", mode="RGB")
    return report, rows


# ---------------------------------------------------------------------- help
def test_help_documents_commands_and_layout(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for word in ("demo", "invert", "evaluate", "layers", "info", "bench", "report.json",
                 "summary.csv"):
        assert word in out
    for command in ("demo", "invert", "evaluate", "layers"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0 and "--quiet" in out and "--debug" in out
        assert f"examples:\n  invert-native {command} " in out and "exit status" in out
        assert "--learning-rate" in out and "--lambda-alpha" in out
    for command in ("invert", "layers"):  # the names --rep caffenet:LAYER / --layers take
        code, out, _ = run([command, "--help"], capsys)
        assert "CaffeNet layers: conv1, relu1, mpool1, norm1," in out and "relu7, fc8." in out


def test_info_and_bench_help_have_examples_and_exit_statuses(capsys):
    for command in ("info", "bench"):
        code, out, _ = run([command, "--help"], capsys)
        assert code == 0
        assert f"examples:\n  invert-native {command}" in out and "exit status" in out
        assert len(out.split("\n\n")[1]) > 80  # a description, not only the usage


def test_mistyped_option_points_at_the_command_help(capsys):
    for command in (["bench"], ["demo"], ["evaluate", "a.png", "b.png"]):
        code, _, err = run(command + ["--quikc"], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "unrecognized arguments: --quikc" in err
        assert f"(see invert-native {command[0]} --help)" in err, err


def test_rep_with_spaces_around_the_layer():
    assert cli._parse_rep("caffenet: conv1") == ("caffenet", "conv1")
    assert cli._parse_rep(" CaffeNet : relu5 ") == ("caffenet", "relu5")
    assert cli._parse_rep(" hog") == ("hog", None)


def test_figure_text_keeps_its_spaces():
    # Pillow's default font draws a 2-pixel space: "HOGb 75.9%" read "HOGb75.9%"
    from invert_native.experiments.figures import _spaced

    assert _spaced("HOGb 75.9%") == "HOGb  75.9%"


def test_size_limits(monkeypatch):
    import argparse

    assert cli._parse_size(f"{cli.MAX_SIZE_SIDE}x16") == (cli.MAX_SIZE_SIDE, 16)
    with pytest.raises(argparse.ArgumentTypeError, match="at most 8192"):
        cli._parse_size("40000x40000")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as a user may lower it
    with pytest.raises(argparse.ArgumentTypeError, match="more than Pillow's limit of 1000"):
        cli._parse_size("40x40")


def test_no_command_prints_the_help(capsys):
    code, out, err = run([], capsys)
    assert code == 2 and out == ""
    assert "usage: invert-native" in err and "evaluate" in err and "examples:" in err


def test_info_reports_the_sgemm_kernel(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0
    assert f"SGEMM kernel {invert_native._cpu.sgemm_kernel()}" in out and "ok" in out


def test_ctrl_c_before_the_command_runs(monkeypatch, capsys):
    def interrupted(sub):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_add_commands", interrupted)  # while the parser is built
    code, out, err = run(["demo", "--quick"], capsys)
    assert code == 130 and err == "invert-native: interrupted\n"


def untrained_label(path) -> bool:
    """Whether the PNG carries the untrained-weights label (a text chunk)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.text.get("invert_native.weights") == "untrained"


# ---------------------------------------------------------------------- demo
def test_demo_quick_with_untrained_caffenet(tmp_path, capsys):
    out = tmp_path / "demo"
    docs = tmp_path / "docs"
    code, stdout, err = run(["demo", "--quick", "--size", "48x64", "--iterations", "30",
                             "--random-weights", "--layers", "conv1,relu1", "-o", out,
                             "--docs", docs] + FAST, capsys)
    assert code == 0, err
    assert str(out) in stdout and str(docs / "table1.md") in stdout
    assert "UNTRAINED" in err  # the warning survives --quiet
    report, rows = assert_folder(out, n_rows=2 * 3 + 2, alone=("astronaut-colour",))
    assert report["warnings"] and "UNTRAINED" in report["warnings"][0]
    summary = read_csv(out / "summary.csv")
    assert [r["representation"] for r in summary] == ["hog", "hogb", "dsift"]
    for r in summary:
        assert int(r["images"]) == 2
        assert_error(r["error_mean"])
        assert_error(r["error_squared_mean"])
        assert_error(r["error_std"], hi=1.0)
    deep = read_csv(out / "summary-caffenet.csv")
    assert [r["layer"] for r in deep] == ["conv1", "relu1"]
    assert all(float(r["lambda_tv"]) == 0.5 for r in deep)  # the paper's for layers 1-6
    assert_png(out / "figure-caffenet.png", mode="RGB")
    assert_png(out / "images" / "astronaut__original.png", size=(64, 48))
    assert_png(out / "images" / "astronaut__hog.png", size=(64, 48), mode="L")
    assert_png(out / "images" / "astronaut-colour__original.png", size=(227, 227), mode="RGB")
    assert_png(out / "images" / "astronaut-colour__conv1__lv0.5.png", size=(227, 227),
               mode="RGB")
    # untrained weights are labelled in every picture and table row they produced
    assert untrained_label(out / "figure-caffenet.png")
    assert untrained_label(out / "images" / "astronaut-colour__conv1__lv0.5.png")
    assert not untrained_label(out / "images" / "astronaut__hog.png")
    assert {r["weights"] for r in deep} == {"untrained"}
    assert {r["weights"] for r in rows if r["representation"].startswith("caffenet")} == {
        "untrained"}
    assert {r["weights"] for r in rows if not r["representation"].startswith("caffenet")} == {""}
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "UNTRAINED" in md and "28.10" in md
    # --docs: what the README shows, from the same run
    figure = assert_png(docs / "table1.png", mode="RGB")
    with Image.open(out / "figure.png") as im:
        assert np.array_equal(figure, np.asarray(im))
    table = [line for line in (docs / "table1.md").read_text().splitlines()
             if line.startswith("| ") and "±" in line]
    assert [line.split(" | ")[0] for line in table] == ["| HOG", "| HOGb", "| DSIFT"]
    assert "28.10 ± 7.9" in table[0]
    record = json.loads((docs / "table1.json").read_text())
    assert record["images"] == ["astronaut", "camera"] and record["size"] == [48, 64]
    assert record["command"].startswith("invert-native demo --quick")
    for rep in ("hog", "hogb", "dsift"):
        for key in ("paper", "squared", "relative"):
            assert len(record["errors"][rep][key]) == 2
            for v in record["errors"][rep][key]:
                assert_error(v, hi=10.0)


# ---------------------------------------------------------------------- invert
def test_invert_hog_restarts_and_sidecar(photos, tmp_path, capsys):
    out = tmp_path / "sub" / "astro-hog.png"
    code, stdout, err = run(["invert", photos / "astro.jpg", "--rep", "hog", "--restarts", "2",
                             "--iterations", "40", "-o", out] + FAST, capsys)
    assert code == 0, err
    assert_png(out, size=(64, 64), mode="L")
    assert_png(out.with_name("astro-hog.compare.png"), mode="RGB")
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["representation"]["name"] == "hog"
    assert side["settings"]["iterations"] == 40 and side["settings"]["restarts"] == 2
    assert len(side["restarts"]) == 2
    for r in side["restarts"]:
        assert_error(r["error_relative"])
        assert r["objective"] > 0
    assert side["best_restart"] in (0, 1)
    assert side["timings"]["inversion_s"] > 0 and side["timings"]["per_iteration_ms"] > 0
    assert side["input"]["size"] == [64, 64]


def test_invert_color_hogb_and_grey_input(photos, tmp_path, capsys):
    out = tmp_path / "c.png"
    code, _, err = run(["invert", photos / "astro.jpg", "--rep", "hogb", "--color",
                        "--iterations", "20", "-o", out, "--threads", "1"], capsys)
    assert code == 0, err
    assert_png(out, size=(64, 64), mode="RGB")
    # a grey image for DSIFT, brought to a size
    out = tmp_path / "g.png"
    code, _, err = run(["invert", photos / "camera.png", "--rep", "dsift", "--size", "32x40",
                        "--iterations", "20", "-o", out, "--threads", "1"], capsys)
    assert code == 0, err
    assert_png(out, size=(40, 32), mode="L")
    assert "resized from 36x48 to 32x40" in err


def test_invert_caffenet_untrained_is_labelled(photos, tmp_path, capsys):
    out = tmp_path / "c1.png"
    code, _, err = run(["invert", photos / "camera.png", "--rep", "caffenet:conv1",
                        "--random-weights", "--iterations", "3", "-o", out] + FAST, capsys)
    assert code == 0, err
    assert "UNTRAINED" in err
    assert_png(out, size=(227, 227), mode="RGB")
    assert untrained_label(out) and untrained_label(out.with_suffix(".compare.png"))
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["representation"]["weights"]["trained"] is False
    assert any("UNTRAINED" in w for w in side["warnings"])
    assert side["representation"]["code_shape"] == [96, 55, 55]
    assert_error(side["restarts"][0]["error_relative"])


# ---------------------------------------------------------------------- evaluate
def test_evaluate_table1_on_mixed_images(photos, tmp_path, capsys):
    out = tmp_path / "t1"
    code, stdout, err = run(["evaluate", photos / "astro.jpg", photos / "camera.png",
                             photos / "coffee.png", "--rep", "hog,dsift", "--iterations", "40",
                             "-o", out, "--threads", "1"], capsys)
    assert code == 0, err
    assert "alpha channel" in err  # RGBA composited, and said so
    report, rows = assert_folder(out, n_rows=3 * 2)
    # default common size: smallest height x smallest width (36 x 48)
    assert report["sections"]["table1"]["size"] == [36, 48]
    for r in rows:
        assert_error(r["error"])
        assert_error(r["error_squared"])
        assert_png(out / r["file"], size=(48, 36))
    summary = read_csv(out / "summary.csv")
    assert [r["representation"] for r in summary] == ["hog", "dsift"]
    for r in summary:
        assert int(r["images"]) == 3
        assert_error(r["error_mean"])
        assert 0 <= float(r["error_std"]) < float(r["error_mean"]) + 1
    # the markdown table parses: a row per representation with a mean ± std
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| HOG |")]
    assert len(table) == 1 and "±" in table[0]
    # the summary on stdout is the same table
    assert "| HOG | 3 |" in stdout
    sec = report["sections"]["table1"]
    assert sec["normalisers"]["hog"]["N_phi"] > 0


def test_evaluate_near_copies_warns(photos, tmp_path, capsys):
    """A photo and the same photo with +0/+1 grey-level noise: N_Phi is a few % of the codes'
    norm (not the exact duplicate that is refused), so the errors are inflated: a warning on
    stderr (even with --quiet), in report.json and in report.md; the run still completes."""
    astro = np.asarray(Image.open(photos / "astro.jpg")).astype(np.int16)
    noise = np.random.default_rng(0).integers(0, 2, astro.shape)
    Image.fromarray(np.clip(astro + noise, 0, 255).astype(np.uint8)).save(tmp_path / "n.png")
    out = tmp_path / "near"
    code, _, err = run(["evaluate", photos / "astro.jpg", tmp_path / "n.png", "--rep",
                        "hog,dsift", "--iterations", "2", "-o", out] + FAST, capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "barely differ" in line]
    assert len(warned) == 2 and all(w.startswith("invert-native: warning:") for w in warned)
    assert "nearly identical" in warned[0] and "divides by N_Phi" in warned[0]
    report = json.loads((out / "report.json").read_text())
    assert sum("barely differ" in w for w in report["warnings"]) == 2
    assert (out / "report.md").read_text().count("**Warning:** the images' ") == 2
    # layers: one warning naming the layers
    code, _, err = run(["layers", photos / "astro.jpg", tmp_path / "n.png", "--random-weights",
                        "--layers", "conv1,relu7", "--iterations", "1", "-o",
                        tmp_path / "near-layers"] + FAST, capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "barely differ" in line]
    assert len(warned) == 1 and "codes at conv1, relu7 barely differ" in warned[0], err


# ---------------------------------------------------------------------- layers
@pytest.fixture(scope="module")
def npz_weights(tmp_path_factory):
    """Untrained CaffeNet weights in the .npz layout --weights reads (about 240 MB)."""
    path = tmp_path_factory.mktemp("weights") / "caffenet-random.npz"
    invert_native.CaffeNet.random(seed=1).save_npz(path)
    yield path
    path.unlink()


def test_layers_sweep_from_npz(photos, npz_weights, tmp_path, capsys):
    out = tmp_path / "t3"
    code, stdout, err = run(["layers", photos / "astro.jpg", photos / "camera.png",
                             "--weights", npz_weights, "--layers", "conv1,mpool1",
                             "--lambda-tv", "0.5,50", "--iterations", "3", "-o", out] + FAST,
                            capsys)
    assert code == 0, err
    report, rows = assert_folder(out, n_rows=2 * 2 * 2)
    for r in rows:
        assert_error(r["error"], hi=10.0)  # N_Phi metric (two images)
    summary = read_csv(out / "summary.csv")
    assert {(r["layer"], float(r["lambda_tv"])) for r in summary} == {
        ("conv1", 0.5), ("mpool1", 0.5), ("conv1", 50.0), ("mpool1", 50.0)}
    assert {r["metric"] for r in summary} == {"error"}
    paper = {(r["layer"], float(r["lambda_tv"])): float(r["paper_error"]) for r in summary}
    assert paper[("conv1", 0.5)] == pytest.approx(0.10)
    sec = report["sections"]["layers"]
    # the file was saved from an untrained (random) net, and records it: labelled untrained
    assert sec["weights"]["trained"] is False and sec["weights"]["file"] == str(npz_weights)
    assert "UNTRAINED" in err and "saved from an untrained net" in err  # despite --quiet
    assert any("UNTRAINED" in w for w in report["warnings"])
    md = (out / "report.md").read_text()
    assert "| conv1 |" in md and "paper λV=50" in md and "**Warning:** UNTRAINED" in md


@pytest.mark.parametrize("mask, variant", [(["--window", "5"], "window5"),
                                           (["--group", "2"], "group2")])
def test_layers_window_and_group(photos, tmp_path, capsys, mask, variant):
    out = tmp_path / variant
    code, _, err = run(["layers", photos / "astro.jpg", "--random-weights", "--layers",
                        "conv1", "--iterations", "3", "--restarts", "2", "-o", out] + mask
                       + FAST, capsys)
    assert code == 0, err
    report, rows = assert_folder(out, n_rows=1, alone=("astro",))
    assert rows[0]["variant"] == variant
    assert (out / "images" / f"astro__conv1__lv0.5__{variant}__r1.png").is_file()
    summary = read_csv(out / "summary.csv")
    assert summary[0]["metric"] == "error_relative" and summary[0]["paper_error"] == ""


# ---------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.png").write_bytes(b"this is not an image")
    data = (photos / "camera.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(d / "tiny.png")
    Image.fromarray(np.zeros((14, 14), np.uint8) + 40).save(d / "small.png")
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(d / "blank.png")
    Image.fromarray(np.full((40, 40), 160, np.uint8)).save(d / "blank2.png")
    # the same pixels as an 8-bit and a 16-bit PNG, and the same JPEG twice
    grey = np.asarray(Image.open(photos / "camera.png"))
    Image.fromarray(grey).save(d / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(d / "grey16.png")
    shutil.copy(photos / "astro.jpg", d / "astro-copy.jpg")
    shutil.copy(photos / "camera.png", d / "prev.compare.png")  # an earlier run's output
    np.savez(d / "wrong.npz", conv1=np.zeros(3, np.float32))
    (d / "garbage.npz").write_bytes(b"not a zip")
    (d / "garbage.onnx").write_bytes(b"not a protobuf")
    (d / "weights.h5").write_bytes(b"x")
    np.savez(d / "wrongshape.npz", **{"fc8.weight": np.zeros((10, 4096), np.float32),
                                      "fc8.bias": np.zeros(1000, np.float32)})
    for name, value in (("nan", np.nan), ("inf", np.inf)):  # float TIFFs
        a = np.full((40, 40), 100.0, np.float32)
        a[3, 5] = value
        Image.fromarray(a, "F").save(d / f"{name}.tif")
    return d


def _bad_cases():
    A = "{photos}/astro.jpg"
    C = "{photos}/camera.png"
    return {
        "missing image": ["invert", "{bad}/nope.png", "--rep", "hog"],
        "corrupt image": ["invert", "{bad}/corrupt.png", "--rep", "hog"],
        "truncated image": ["invert", "{bad}/truncated.png", "--rep", "hog"],
        "empty file": ["invert", "{bad}/empty.jpg", "--rep", "hogb"],
        "folder as image": ["invert", "{bad}", "--rep", "hog"],
        "too small for HOG": ["invert", "{bad}/tiny.png", "--rep", "hog"],
        "too small for DSIFT": ["invert", "{bad}/small.png", "--rep", "dsift"],
        "too small for CaffeNet": ["invert", "{bad}/tiny.png", "--rep", "caffenet:conv1",
                                   "--random-weights"],
        "too small in evaluate": ["evaluate", A, "{bad}/tiny.png", "--rep", "dsift"],
        "blank image": ["invert", "{bad}/blank.png", "--rep", "hog"],
        "unknown representation": ["invert", A, "--rep", "sift"],
        "unknown representation in evaluate": ["evaluate", A, C, "--rep", "hog,gist"],
        "unknown CaffeNet layer": ["invert", A, "--rep", "caffenet:conv7"],
        "unknown layer in layers": ["layers", A, "--random-weights", "--layers", "conv1,pool9"],
        "CaffeNet without weights": ["invert", A, "--rep", "caffenet:conv1"],
        "layers without weights": ["layers", A],
        "missing weights": ["layers", A, "--weights", "{bad}/none.onnx"],
        "weights that do not match": ["invert", A, "--rep", "caffenet:fc8", "--weights",
                                      "{bad}/wrong.npz"],
        "weights not an npz": ["layers", A, "--weights", "{bad}/garbage.npz"],
        "weights not an onnx": ["layers", A, "--weights", "{bad}/garbage.onnx"],
        "weights of unknown format": ["layers", A, "--weights", "{bad}/weights.h5"],
        "window on fc layer": ["layers", A, "--random-weights", "--layers", "fc6",
                               "--window", "5"],
        "window and group": ["layers", A, "--random-weights", "--window", "5", "--group", "1"],
        "one image for Table 1": ["evaluate", A],
        "colour DSIFT": ["invert", A, "--rep", "dsift", "--color"],
        "output not png": ["invert", A, "--rep", "hog", "-o", "{tmp}/x.jpg"],
        "bad size": ["evaluate", A, C, "--size", "12by3"],
        "zero iterations": ["invert", A, "--rep", "hog", "--iterations", "0"],
        "unknown command": ["frobnicate"],
        "unknown demo photo": ["demo", "--photos", "astronaut,mona-lisa"],
        # Table 1 / Table 3 divide by N_Phi, the mean distance between the images' codes
        "same image twice": ["evaluate", A, A],
        "same image twice, spelt two ways": ["evaluate", C, "{photos}/../{photos.name}/camera.png"],
        "same pixels, 8 and 16 bits": ["evaluate", "{bad}/grey8.png", "{bad}/grey16.png"],
        "same pixels, two files": ["evaluate", A, "{bad}/astro-copy.jpg", "--rep", "hogb"],
        "blank images": ["evaluate", "{bad}/blank.png", "{bad}/blank2.png"],
        "same image twice in layers": ["layers", A, A, "--random-weights", "--layers", "conv1"],
        "same pixels in layers": ["layers", A, "{bad}/astro-copy.jpg", "--random-weights",
                                  "--layers", "conv1"],
        # options checked by the parser
        "negative seed in invert": ["invert", A, "--rep", "hog", "--seed", "-1"],
        "negative seed in evaluate": ["evaluate", A, C, "--seed", "-1"],
        "negative seed in layers": ["layers", A, "--random-weights", "--seed", "-2"],
        "negative seed in demo": ["demo", "--quick", "--seed", "-1"],
        "max side too small": ["invert", A, "--rep", "hog", "--max-side", "8"],
        "negative max side": ["evaluate", A, C, "--max-side", "-1"],
        "unknown layer in demo without weights": ["demo", "--quick", "--layers", "foo"],
        "layers in demo without weights": ["demo", "--quick", "--layers", "conv1"],
        "empty layer list": ["layers", A, "--random-weights", "--layers", ","],
        "zero learning rate": ["invert", A, "--rep", "hog", "--learning-rate", "0"],
        "infinite learning rate": ["evaluate", A, C, "--learning-rate", "inf"],
        "negative lambda alpha": ["layers", A, "--random-weights", "--lambda-alpha", "-1"],
        # files
        "weights folder": ["layers", A, "--weights", "{bad}"],
        "output over the input image": ["invert", C, "--rep", "hog", "-o", C],
        "output's compare.png over the input": ["invert", "{bad}/prev.compare.png", "--rep",
                                                "hog", "-o", "{bad}/prev.png"],
        "output folder is a file": ["invert", A, "--rep", "hog", "-o", C + "/x.png"],
        "docs folder is a file": ["demo", "--quick", "--docs", C + "/docs"],
        # second audit
        "NaN pixels": ["invert", "{bad}/nan.tif", "--rep", "hog"],
        "infinite pixels": ["evaluate", A, "{bad}/inf.tif"],
        "huge size": ["evaluate", A, C, "--size", "40000x40000"],
        "same demo photo twice": ["demo", "--quick", "--photos", "astronaut,astronaut"],
        "fc8 weight cut": ["layers", A, "--weights", "{bad}/wrongshape.npz"],
        "mistyped bench option": ["bench", "--quikc"],
        "empty bench section list": ["bench", "--only", ""],
        "unknown bench section": ["bench", "--only", "per_op,timing"],
    }


# what the one line must say, where the case is easy to get wrong
_EXPECTED = {
    "same image twice": "the same image given 2 times: the paper's metric needs at least two "
                        "different images",
    "same image twice, spelt two ways": "the same image given 2 times",
    "same pixels, 8 and 16 bits": "are identical (the same pixels",
    "same pixels, two files": "are identical (the same pixels",
    "blank images": "code is all zeros (a blank image?)",
    "same image twice in layers": "one image gives the error",
    "same pixels in layers": "are identical (the same pixels",
    "negative seed in demo": "argument --seed: must be a whole number, 0 or more",
    "max side too small": "must be 0 (no limit) or at least 16",
    "unknown layer in demo without weights": "unknown layer 'foo'",
    "empty layer list": "the layer list ',' is empty",
    "weights folder": "is a folder, not a weights file",
    "output over the input image": "would overwrite the input",
    "output's compare.png over the input": "would overwrite the input",
    "output folder is a file": "is a file, not a folder",
    "docs folder is a file": "is a file, not a folder",
    "NaN pixels": "nan.tif: 1 of its 1600 pixels are not finite numbers (NaN or infinity)",
    "infinite pixels": "inf.tif: 1 of its 1600 pixels are not finite",
    "huge size": "each side must be at most 8192 pixels",
    "same demo photo twice": "--photos: astronaut given twice",
    "fc8 weight cut": "fc8.weight has 10 rows (classes) but fc8.bias has 1000 entries",
    "mistyped bench option": "(see invert-native bench --help)",
    "empty bench section list": "choose from per_op, per_iteration, whole_run",
    "unknown bench section": "unknown section(s) 'timing': choose from per_op, per_iteration",
}


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_one_line_exit_2(case, photos, bad, tmp_path, capsys):
    argv = [a.format(photos=photos, bad=bad, tmp=tmp_path) for a in _bad_cases()[case]]
    if argv[0] in ("evaluate", "layers", "demo"):
        argv += ["-o", tmp_path / "o"]
    elif argv[0] == "invert" and "-o" not in argv:
        argv += ["-o", tmp_path / "o" / "x.png"]
    code, out, err = run(argv, capsys)
    assert code == 2, (case, err)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("invert-native"), err
    assert _EXPECTED.get(case, "") in errors[0]
    assert "Traceback" not in err
    assert not list(tmp_path.glob("o/*"))  # refused before the results folder is filled


def test_device_cuda_without_cuda(photos, tmp_path, capsys):
    if invert_native.cuda_available():
        pytest.skip("a CUDA device is present: --device cuda is valid here")
    code, _, err = run(["invert", photos / "astro.jpg", "--rep", "hog", "--device", "cuda",
                        "-o", tmp_path / "x.png"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "--device cuda" in err and "Traceback" not in err


def test_out_folder_not_empty_needs_force(photos, tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["evaluate", photos / "astro.jpg", photos / "camera.png", "--rep", "hog",
            "--iterations", "5", "-o", out] + FAST
    code, _, err = run(argv, capsys)
    assert code == 2 and "not empty" in err
    code, _, err = run(argv + ["--force"], capsys)
    assert code == 0, err
    assert (out / "keep.txt").read_text() == "mine"


def test_colliding_image_names_are_made_unique(photos, tmp_path, capsys):
    d = tmp_path / "col"
    (d / "sub").mkdir(parents=True)
    # stems x, x, x-2, X: the second x once became x-2, as the third did
    for name, photo in (("x.png", "coffee.png"), ("sub/x.png", "camera.png"),
                        ("x-2.png", "astro.jpg"), ("X.png", "camera.png")):
        shutil.copy(photos / photo, d / name)
    out = tmp_path / "ev"
    paths = [d / "x.png", d / "sub" / "x.png", d / "x-2.png", d / "X.png"]
    code, _, err = run(["evaluate", *paths, "--rep", "hog", "--iterations", "5", "-o", out]
                       + FAST, capsys)
    assert code == 0, err
    report, rows = assert_folder(out, n_rows=4)
    images = report["settings"]["images"]
    assert len(images) == 4 and sorted(images.values()) == sorted(str(p) for p in paths)
    names = [r["image"] for r in rows]
    assert len({n.casefold() for n in names}) == 4
    assert images["x"] == str(d / "x.png") and images["x-2"] == str(d / "sub" / "x.png")
    assert len(list((out / "images").glob("*__hog.png"))) == 4


def test_output_checked_before_inverting(photos, tmp_path, capsys, monkeypatch):
    from invert_native.experiments import shallow

    def never(*args, **kwargs):
        raise AssertionError("the inversion ran before the output was checked")

    monkeypatch.setattr(shallow, "invert_image", never)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder is needed")
    for out in ([Path("/proc/x.png")] if Path("/proc/self").is_dir() else []) + [
            blocked / "x.png", blocked / "deeper" / "x.png"]:
        code, _, err = run(["invert", photos / "camera.png", "--rep", "hog", "-o", out]
                           + FAST, capsys)
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith(f"invert-native: error: -o {out}: ")
    assert blocked.read_text() == "a file where a folder is needed"


def test_results_folder_never_replaces_an_input(photos, tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    shutil.copy(photos / "astro.jpg", out / "figure.png")  # the name of a file the run writes
    code, _, err = run(["evaluate", out / "figure.png", photos / "camera.png", "-o", out,
                        "--force"] + FAST, capsys)
    assert code == 2 and "would replace its input" in err
    assert (out / "figure.png").read_bytes() == (photos / "astro.jpg").read_bytes()


def test_divergence_advises_the_command_options(photos, tmp_path, capsys):
    out = tmp_path / "d.png"
    code, _, err = run(["invert", photos / "camera.png", "--rep", "hog", "--lambda-tv", "1e30",
                        "--iterations", "20", "-o", out] + FAST, capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("invert-native: error: the inversion diverged")
    # invert() names lambda_tv as the culprit; the line names the option
    assert "--lambda-tv" in err and "--learning-rate" in err
    assert "learning_rate" not in err and "lambda_tv" not in err
    assert not out.exists()


def test_learning_rate_and_lambda_alpha_options(photos, tmp_path, capsys):
    out = tmp_path / "lr.png"
    code, _, err = run(["invert", photos / "camera.png", "--rep", "hogb", "--iterations", "20",
                        "--learning-rate", "0.002", "--lambda-alpha", "1e-3", "-o", out] + FAST,
                       capsys)
    assert code == 0, err
    settings = json.loads(out.with_suffix(".json").read_text())["settings"]
    # the paper's schedule (x1, x0.1, x0.01, x0.001), started at 0.002, stretched to 20
    assert settings["learning_rate"] == [[0.002, 5], [0.0002, 5], [2e-05, 5],
                                         [pytest.approx(2e-06), 5]]
    assert settings["iterations"] == 20 and settings["lambda_alpha"] == 1e-3
    folder = tmp_path / "ev"
    code, _, err = run(["evaluate", photos / "astro.jpg", photos / "camera.png", "--rep", "hog",
                        "--iterations", "8", "--learning-rate", "0.003", "-o", folder] + FAST,
                       capsys)
    assert code == 0, err
    report = json.loads((folder / "report.json").read_text())
    assert report["settings"]["learning_rate"] == 0.003
    assert "lambda_alpha" not in report["settings"]  # only what was given: old runs resume


def test_layer_codes_that_do_not_differ_stop_before_any_inversion(photos, tmp_path, capsys,
                                                                  monkeypatch):
    from invert_native.experiments import deep

    def never(*args, **kwargs):
        raise AssertionError("an inversion ran")

    # relu5 codes equal up to rounding noise (N_Phi 1e-9 of their norm)
    monkeypatch.setattr(deep, "layer_scales", lambda net, images, jobs: {
        (j.layer, j.mask): (1e-9 if j.layer == "relu5" else 3.0, 5.0) for j in jobs})
    monkeypatch.setattr(deep, "invert_layer", never)
    out = tmp_path / "l"
    code, _, err = run(["layers", photos / "astro.jpg", photos / "camera.png",
                        "--random-weights", "--layers", "conv1,relu5", "-o", out] + FAST, capsys)
    assert code == 2
    assert "the images' relu5 codes do not differ" in err and "Traceback" not in err
    assert not out.exists()


def test_debug_shows_the_exception(photos, capsys):
    with pytest.raises(cli.CliError, match="no such file"):
        cli.main(["invert", str(photos / "missing.png"), "--rep", "hog", "--debug"])


# ---------------------------------------------------------------------- console script
def _console_script():
    here = Path(sys.executable).parent
    exe = shutil.which("invert-native", path=os.pathsep.join([str(here),
                                                              os.environ.get("PATH", "")]))
    if exe is None:
        pytest.skip("the invert-native console script is not installed next to this Python")
    return exe


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the module doc
    return env


def test_console_script_invert(photos, tmp_path):
    exe = _console_script()
    out = tmp_path / "cs.png"
    p = subprocess.run([exe, "invert", str(photos / "camera.png"), "--rep", "hogb",
                        "--iterations", "20", "-o", str(out), "--threads", "1"],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert p.returncode == 0, p.stderr
    assert_png(out, size=(48, 36))
    assert "wrote" in p.stdout
    p = subprocess.run([exe, "invert", str(tmp_path / "none.png"), "--rep", "hog"],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_ctrl_c_keeps_finished_results(photos, tmp_path):
    exe = _console_script()
    out = tmp_path / "interrupted"
    # enough work that the interrupt lands mid-sweep: 3 images x 2 representations
    p = subprocess.Popen([exe, "evaluate", str(photos / "astro.jpg"), str(photos / "camera.png"),
                          str(photos / "coffee.png"), "--rep", "hog,dsift", "--size", "64x64",
                          "--iterations", "3000", "-o", str(out), "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = out / "results.csv"
            if rows.is_file() and len(read_csv(rows)) >= 1:
                break
            if p.poll() is not None:
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("invert-native: interrupted") and str(out) in last
    assert "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted"
    rows = read_csv(out / "results.csv")
    assert 1 <= len(rows) < 6
    for r in rows:
        assert_error(r["error"])
        assert_png(out / r["file"])
    assert_png(out / "figure.png")
    assert not list(out.rglob("*.tmp"))


def test_ctrl_c_while_the_package_imports_is_one_line(tmp_path):
    # the console script is named invert-native: until main() runs, SIGINT ends it with the
    # CLI's line and 130 (here: raised by hand during the import, before main)
    code = textwrap.dedent("""
        import os, signal, sys
        sys.argv = ["/usr/bin/invert-native", "info"]
        import invert_native
        os.kill(os.getpid(), signal.SIGINT)
        print("not reached")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "invert-native: interrupted\n" and "not reached" not in proc.stdout
    # main() hands Ctrl-C back to Python, so the commands see KeyboardInterrupt
    code = textwrap.dedent("""
        import signal, sys
        sys.argv = ["/usr/bin/invert-native", "info"]
        import invert_native
        from invert_native import cli
        assert signal.getsignal(signal.SIGINT) is invert_native._interrupted_while_starting
        try:
            cli.main(["no-such-command"])
        except SystemExit:
            pass
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
    assert proc.stdout.strip().endswith("True"), proc.stdout + proc.stderr
