"""Results folders: every file written atomically, in one documented layout.

A command's results folder (``invert-native demo|evaluate|layers -o OUT``)::

    OUT/
      report.md       what was run and what came out: settings, tables, the figures
      report.json     the same, machine-readable: command line, versions, settings, notes,
                      status ("running", "complete" or "interrupted"), one record per
                      inversion (errors of every restart, objective, seconds), summaries
      results.csv     one row per inversion (image, representation or layer, lambda_tv, errors)
      summary.csv     the table of the command: mean and std per representation (evaluate,
                      demo) or error per layer x lambda_tv (layers)
      figure.png      originals beside reconstructions, labelled with the errors
      images/         every original and reconstruction alone, as PNG:
                      <image>__original.png, <image>__<representation>.png (evaluate, demo),
                      <image>__<layer>__lv<lambda_tv>[__window5|__group1][__r<restart>].png
                      (layers; one file per restart when --restarts > 1), and beside
                      each reconstruction <same name>.npz: what --resume needs of that
                      inversion (the codes of the image and of each restart, objectives,
                      settings, seconds, the best reconstruction; or the failure)

``demo --weights`` adds the CaffeNet part as figure-caffenet.png and summary-caffenet.csv.
Errors in the CSV and JSON files are fractions (0.281 is 28.1 %); the Markdown shows %.

``invert-native invert IMAGE -o OUT.png`` writes OUT.png (the best restart), OUT.json (its
settings, errors per restart and timings) and OUT.compare.png (the original beside every
restart).

Files are written to a temporary name in the same folder and renamed into place
(``os.replace``), so a reader (or a Ctrl-C) never sees half a file; the report is rewritten
after every finished inversion, so an interrupted run keeps everything that finished.
A per-inversion .npz is written last, after the inversion's PNGs: it marks the inversion
finished. ``--resume`` reads them back (:meth:`ResultsFolder.load_inversion`), after checking
that report.json records the same command and settings, and redoes only what has none.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["LAYOUT", "ResultsFolder", "atomic_write", "write_text", "write_json", "write_csv",
           "write_png", "write_npz", "read_npz", "jsonable", "slug", "weights_label"]

# The layout above, as the CLI's --help prints it.
LAYOUT = """\
results folder layout:
  OUT/report.md     settings, tables and figures, readable
  OUT/report.json   all numbers: settings, versions, status (running/complete/interrupted),
                    one record per inversion (errors per restart, objective, seconds)
  OUT/results.csv   one row per inversion
  OUT/summary.csv   the command's table (mean/std per representation, or layer x lambda_tv)
  OUT/figure.png    originals beside reconstructions, labelled with errors
  OUT/images/       each original and reconstruction alone (<image>__original.png,
                    <image>__<representation>.png, <image>__<layer>__lv<lambda_tv>.png),
                    and per inversion a .npz of the same name: what --resume reads back
                    (codes of the image and of the reconstructions, objectives, settings)
  demo --weights adds figure-caffenet.png and summary-caffenet.csv.
  invert writes OUT.png (best restart), OUT.compare.png and OUT.json instead.
Errors in CSV/JSON are fractions (0.281 = 28.1 %). Files are replaced atomically
and the report is rewritten after every finished inversion: Ctrl-C keeps what
finished, and `--resume -o OUT` (same command and settings) redoes only the
inversions that have no .npz yet, after Ctrl-C or a crash."""


def atomic_write(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: leave no temporary file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_text(path, text: str) -> Path:
    return atomic_write(path, text.encode("utf-8"))


def jsonable(obj):
    """Plain JSON values: NumPy scalars and arrays to Python, NaN and Inf to None, paths to str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_json(path, obj) -> Path:
    # strict JSON (no NaN): other tools read it
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


def write_csv(path, rows: list[dict], columns: list[str]) -> Path:
    """One row per dict; missing keys are empty cells, floats written with repr precision."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        cells = []
        for c in columns:
            v = jsonable(row.get(c))
            cells.append("" if v is None else v)
        w.writerow(cells)
    return write_text(path, buf.getvalue())


def weights_label(weights: dict | None):
    """(title, PNG text) that mark pictures made with untrained weights; (None, None) when the
    weights are trained or there are none. ``weights``: the record of the CLI's weights."""
    if not weights or weights.get("trained", True):
        return None, None
    title = "UNTRAINED random CaffeNet weights (not a trained network)"
    return title, {"Comment": title, "invert_native.weights": "untrained"}


def write_png(path, image, text: dict | None = None) -> Path:
    """A PIL image, or an H x W (grey) / H x W x 3 array in [0, 255] (clipped, rounded);
    ``text``: PNG text chunks (key -> value), e.g. a label that must travel with the file."""
    from PIL import Image, PngImagePlugin

    from .figures import to_uint8

    if not isinstance(image, Image.Image):
        image = Image.fromarray(to_uint8(image))
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, str(value))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return atomic_write(path, buf.getvalue())


def write_npz(path, values: dict) -> Path:
    """Arrays, numbers, strings and lists of strings, compressed, written atomically.

    Lists are stored under ``<key>.list`` so that :func:`read_npz` gives them back as lists;
    numbers and strings come back as Python scalars of the same value.
    """
    arrays = {}
    for k, v in values.items():
        if isinstance(v, (list, tuple)):
            arrays[f"{k}.list"] = np.asarray([str(x) for x in v], dtype=str)
        else:
            arrays[k] = np.asarray(v)
    buf = io.BytesIO()
    # the .npz format by hand: np.savez_compressed takes its keys as keyword arguments, and
    # one named "file" would clash with its first parameter
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, a in arrays.items():
            with zf.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    return atomic_write(path, buf.getvalue())


def read_npz(path) -> dict:
    """What :func:`write_npz` wrote (no pickles are read)."""
    out = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            a = z[k]
            if k.endswith(".list"):
                out[k[:-5]] = [str(x) for x in a]
            elif a.ndim == 0:
                out[k] = a.item()
            else:
                out[k] = a
    return out


def slug(text: str) -> str:
    """A file-name-safe version of ``text`` (letters, digits, '-', '_', '.')."""
    s = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text)).strip("-.")
    return s or "image"


class ResultsFolder:
    """A command's results folder (see the module documentation for the layout).

    ``report`` is the dict written to report.json; ``rows`` the rows of results.csv.
    """

    def __init__(self, path, report: dict):
        self.path = Path(path)
        self.images = self.path / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.report = report
        self.rows: list[dict] = []

    def image(self, name: str, image, text: dict | None = None) -> str:
        """Write images/<name>.png (``text``: PNG text chunks); returns its path relative to
        the folder."""
        write_png(self.images / f"{slug(name)}.png", image, text)
        return f"images/{slug(name)}.png"

    def save_inversion(self, name: str, saved: dict, settings_digest: str) -> str:
        """Write images/<name>.npz: what a resumed run needs of one finished (or failed)
        inversion, tagged with the digest of the run's settings. Write it after the
        inversion's PNGs: its presence marks the inversion finished."""
        path = self.images / f"{slug(name)}.npz"
        write_npz(path, dict(saved, _settings_digest=settings_digest))
        return f"images/{path.name}"

    def load_inversion(self, name: str, settings_digest: str) -> dict | None:
        """images/<name>.npz as :meth:`save_inversion` wrote it, or None where there is none,
        it cannot be read, or it was written by a run of other settings."""
        path = self.images / f"{slug(name)}.npz"
        if not path.is_file():
            return None
        try:
            saved = read_npz(path)
        except Exception:  # damaged: the inversion is redone
            return None
        if saved.pop("_settings_digest", None) != settings_digest:
            return None
        return saved

    def figure(self, pil_image, name: str = "figure.png", text: dict | None = None) -> str:
        write_png(self.path / name, pil_image, text)
        return name

    def write(self, markdown: str, columns: list[str], summary: tuple | None = None) -> None:
        """Rewrite report.json, results.csv, report.md and (given (rows, columns)) summary.csv."""
        write_json(self.path / "report.json", self.report)
        write_csv(self.path / "results.csv", self.rows, columns)
        if summary is not None:
            write_csv(self.path / "summary.csv", *summary)
        write_text(self.path / "report.md", markdown)
