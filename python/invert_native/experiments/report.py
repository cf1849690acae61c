"""Reports of the experiment commands: a results folder filled one inversion at a time.

:class:`Run` owns a :class:`~invert_native.experiments.results.ResultsFolder` and its report
sections (:class:`ShallowSection`: Table 1; :class:`DeepSection`: CaffeNet layers x lambda_V,
Table 3 / Fig. 6-10). After every finished inversion the CLI adds it to its section and
calls :meth:`Run.refresh`, which rewrites report.md, report.json, the CSV files and the
figures, holding Ctrl-C until they are written: an interrupted run keeps everything that
finished, in files that are whole. A section records an inversion from a plain dict
(:func:`shallow_saved`, :func:`deep_saved`) that the CLI also writes as the inversion's .npz,
so a run resumed with ``--resume`` rebuilds its tables from the same numbers.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import shlex
import signal
import threading
import time
from pathlib import Path

import numpy as np

from .results import LAYOUT, ResultsFolder, jsonable, weights_label, write_csv

__all__ = ["Run", "ShallowSection", "DeepSection", "ROW_COLUMNS", "REP_TITLE",
           "deferred_interrupt", "pct", "now", "shallow_saved", "deep_saved"]

REP_TITLE = {"hog": "HOG", "hogb": "HOGb", "dsift": "DSIFT"}


@contextlib.contextmanager
def deferred_interrupt():
    """Hold Ctrl-C while a report is written (re-raised after), so files stay consistent."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class Run:
    """A results folder being filled; its report is rewritten after every inversion."""

    def __init__(self, console, out: Path, command: str, argv, machine: dict, settings: dict,
                 resume: bool = False):
        self.console, self.command = console, command
        self.resume = resume          # read back the inversions the folder already holds
        self.restored = 0             # how many were read back rather than run
        self.settings_digest = settings_digest(command, settings)
        self.started = time.time()
        self.folder = ResultsFolder(out, {
            "command": command, "argv": list(argv), "created": now(), "status": "running",
            "machine": machine, "settings": settings, "notes": console.notes,
            "warnings": console.warnings, "sections": {}})
        self.sections: list = []
        self.failed = 0

    def refresh(self, status: str = "running") -> None:
        rep = self.folder.report
        rep["status"] = status
        rep["elapsed_s"] = round(time.time() - self.started, 3)
        for s in self.sections:
            rep["sections"][s.key] = s.record()
        md = [f"# invert-native {self.command}", "",
              f"`{' '.join(['invert-native'] + [shlex.quote(a) for a in rep['argv']])}`", "",
              f"Status: **{status}**, {sum(len(s.runs) for s in self.sections)} inversion(s) "
              f"finished in {rep['elapsed_s']:.0f} s on {rep['machine']['device'].upper()} "
              f"({rep['machine']['cpu_threads']} CPU thread(s)); invert_native "
              f"{rep['machine']['invert_native']}, {rep['created']}.", ""]
        if self.console.warnings:
            md += [f"**Warning:** {w}" for w in self.console.warnings] + [""]
        for s in self.sections:
            md += s.markdown() + [""]
        if self.console.notes:
            md += ["## Notes", ""] + [f"- {n}" for n in self.console.notes] + [""]
        md += ["## Files", "", "```", LAYOUT, "```", ""]
        with deferred_interrupt():
            for s in self.sections:
                s.write_figure(self.folder)
            summaries = [s.summary() for s in self.sections]
            self.folder.rows = [r for s in self.sections for r in s.rows]
            self.folder.write("\n".join(md), ROW_COLUMNS, summaries[0] if summaries else None)
            for s, summ in zip(self.sections[1:], summaries[1:]):
                write_csv(self.folder.path / f"summary-{s.key}.csv", *summ)


ROW_COLUMNS = ["image", "representation", "weights", "layer", "lambda_tv", "variant",
               "restart", "error", "error_squared", "error_relative", "objective",
               "iterations", "seconds", "file", "status"]


def settings_digest(command: str, settings: dict) -> str:
    """A digest of a run's command and settings, as report.json records them: every
    per-inversion .npz carries it, so --resume never reads back another run's results."""
    text = json.dumps(jsonable({"command": command, "settings": settings}), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def pct(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def shallow_saved(inv, seconds, file) -> dict:
    """What a resumed run needs of a finished shallow inversion (plain arrays and numbers):
    the image's code and each restart's code (the paper's metric), the final objectives,
    the settings the inversion used, its time and file, and the best reconstruction as the
    figure shows it (uint8)."""
    from .figures import to_uint8

    res = inv.result
    objective = np.asarray(res.objective[-1])
    return {"code": np.asarray(inv.code), "codes": np.asarray(inv.codes),
            "objective": objective, "iterations": int(res.options["iterations"]),
            "lambda_tv": float(res.options["lambda_tv"]),
            "lambda_alpha": float(res.options["lambda_alpha"]),
            "sigma": float(res.options["sigma"]), "seconds": float(seconds), "file": str(file),
            "reconstruction": to_uint8(inv.reconstructions[int(np.argmin(objective))])}


def deep_saved(inv, files) -> dict:
    """What a resumed run needs of a finished CaffeNet inversion (see :func:`shallow_saved`)."""
    from .figures import to_uint8

    return {"code": np.asarray(inv.code), "codes": np.asarray(inv.codes),
            "objective": np.asarray(inv.objective), "relative": np.asarray(inv.relative),
            "lambda_tv": float(inv.lambda_tv),
            "iterations": int(inv.result.options["iterations"]), "seconds": float(inv.seconds),
            "files": [str(f) for f in files],
            "reconstruction": to_uint8(inv.reconstructions[inv.best])}


class ShallowSection:
    """Table 1 on an image set: HOG / HOGb / DSIFT errors, both metrics."""

    key = "table1"

    def __init__(self, items, reps, size, scales, options):
        self.items, self.reps, self.size, self.scales = items, reps, size, scales
        self.options = options
        self.runs: dict = {}   # (image, rep) -> record
        self.recons: dict = {}  # (image, rep) -> best reconstruction
        self.rows: list[dict] = []

    def add(self, image, rep, inv, seconds, file) -> None:
        """Record a finished inversion (a ShallowInversion); see :meth:`add_saved`."""
        self.add_saved(image, rep, shallow_saved(inv, seconds, file))

    def add_saved(self, image, rep, saved: dict) -> None:
        """Record a finished inversion from what :func:`shallow_saved` keeps of it (the same
        dict whether it was just computed or read back from the results folder by --resume)."""
        from .shallow import image_errors

        objective = saved["objective"]
        best = int(np.argmin(objective))
        e = image_errors(saved["code"], saved["codes"], self.scales[rep])
        rec = {"restarts": [
            {"error": e["paper"][k], "error_squared": e["squared"][k],
             "error_relative": e["relative"][k], "objective": objective[k]}
            for k in range(len(e["paper"]))],
            "best_restart": best, "error": e["paper"][best], "error_squared": e["squared"][best],
            "error_relative": e["relative"][best], "seconds": saved["seconds"],
            "file": saved["file"], "iterations": saved["iterations"],
            "lambda_tv": saved["lambda_tv"], "lambda_alpha": saved["lambda_alpha"],
            "sigma": saved["sigma"]}
        self.runs[(image, rep)] = rec
        self.recons[(image, rep)] = saved["reconstruction"]
        self.rows.append({"image": image, "representation": rep, "restart": best,
                          "lambda_tv": rec["lambda_tv"], "error": rec["error"],
                          "error_squared": rec["error_squared"],
                          "error_relative": rec["error_relative"],
                          "objective": objective[best], "iterations": rec["iterations"],
                          "seconds": rec["seconds"], "file": rec["file"], "status": "ok"})

    def add_failure(self, image, rep, status, message) -> None:
        self.runs[(image, rep)] = {"status": status, "message": message}
        self.rows.append({"image": image, "representation": rep, "status": status})

    def _values(self, rep, key):
        return [r[key] for (im, rp), r in self.runs.items() if rp == rep and key in r]

    def summary(self):
        from .shallow import PAPER_TABLE1, summarise

        rows = []
        for rep in self.reps:
            e, e2 = self._values(rep, "error"), self._values(rep, "error_squared")
            m, s = summarise(e) if e else (None, None)
            m2, s2 = summarise(e2) if e2 else (None, None)
            pm, ps = PAPER_TABLE1[rep]
            rows.append({"representation": rep, "images": len(e), "error_mean": m,
                         "error_std": s, "error_squared_mean": m2, "error_squared_std": s2,
                         "paper_error_mean": round(pm / 100, 6),
                         "paper_error_std": round(ps / 100, 6)})
        return rows, ["representation", "images", "error_mean", "error_std",
                      "error_squared_mean", "error_squared_std", "paper_error_mean",
                      "paper_error_std"]

    def record(self) -> dict:
        rows, _ = self.summary()
        return {"images": [n for n, _ in self.items], "size": list(self.size),
                "representations": self.reps, "normalisers": {
                    r: {"N_phi": self.scales[r][0], "mean_squared_distance": self.scales[r][1]}
                    for r in self.reps},
                "summary": rows,
                "runs": [dict(image=i, representation=r, **v) for (i, r), v in self.runs.items()]}

    def markdown(self) -> list[str]:
        rows, _ = self.summary()
        h, w = self.size
        md = [f"## Table 1 on {len(self.items)} image(s) (grey, {h}x{w})", "",
              "| representation | images | error % (paper's metric) | squared metric % | "
              "paper, Table 1 |", "|---|---|---|---|---|"]
        for r in rows:
            sd = ("" if r["error_std"] is None else f" ± {100 * r['error_std']:.1f}")
            sd2 = ("" if r["error_squared_std"] is None
                   else f" ± {100 * r['error_squared_std']:.1f}")
            md.append(f"| {REP_TITLE[r['representation']]} | {r['images']} | "
                      f"{pct(r['error_mean'])}{sd} | {pct(r['error_squared_mean'])}{sd2} | "
                      f"{100 * r['paper_error_mean']:.2f} ± {100 * r['paper_error_std']:.1f} |")
        md += ["", "Error = ‖Φ(x\\*) − Φ(x₀)‖ / N_Φ, N_Φ the mean distance between the codes "
               "of the images of this set (the paper's metric); squared = ‖Φ(x\\*) − Φ(x₀)‖² / "
               "mean squared distance (the authors' script). Mean ± std over the images; the "
               "paper's numbers are over 100 ILSVRC-2012 validation images.", "",
               "![originals and reconstructions](figure.png)", "",
               "| image | " + " | ".join(REP_TITLE[r] for r in self.reps) + " |",
               "|---|" + "---|" * len(self.reps)]
        for name, _ in self.items:
            cells = []
            for rep in self.reps:
                r = self.runs.get((name, rep))
                cells.append("" if r is None else r["status"] if "error" not in r
                             else f"{pct(r['error'])} % ({r['seconds']:.1f} s)")
            md.append(f"| {name} | " + " | ".join(cells) + " |")
        return md

    def write_figure(self, folder) -> None:
        folder.figure(self._figure())

    def write_docs(self, folder: Path, report: dict) -> list[Path]:
        """The README's results, from this section of a finished run: ``folder``/table1.png
        (the figure), table1.md (Table 1 with the paper's column, and the command that made
        it) and table1.json (per-image errors and seconds, the summary, settings, machine).
        Returns the paths written."""
        from .results import write_json, write_png, write_text

        rows, _ = self.summary()
        command = " ".join(["invert-native"] + [shlex.quote(a) for a in report["argv"]])
        done = [r for r in self.runs.values() if "error" in r]
        iterations = done[0]["iterations"] if done else None
        h, w = self.size
        md = ["| representation | ours, paper's metric | ours, authors' squared metric | "
              "paper (Table 1, 100 ILSVRC images) |", "|---|---|---|---|"]
        for r in rows:
            md.append(f"| {REP_TITLE[r['representation']]} | "
                      f"{_mean_std(r['error_mean'], r['error_std'])} | "
                      f"{_mean_std(r['error_squared_mean'], r['error_squared_std'])} | "
                      f"{_mean_std(r['paper_error_mean'], r['paper_error_std'])} |")
        md += ["", f"Error % of the reconstruction's code, mean ± std over {len(self.items)} "
               f"image(s) ({', '.join(n for n, _ in self.items)}; grey, {h}x{w}, "
               f"{iterations} iterations, {report['settings']['restarts']} restart(s)). "
               f"Measured with `{command}` ({report['created']}).", ""]
        per_image = {rep: {key: [self.runs.get((n, rep), {}).get(k) for n, _ in self.items]
                           for key, k in (("paper", "error"), ("squared", "error_squared"),
                                          ("relative", "error_relative"))}
                     for rep in self.reps}
        record = {"command": command, "created": report["created"],
                  "images": [n for n, _ in self.items], "size": list(self.size),
                  "iterations": iterations, "settings": report["settings"],
                  "machine": report["machine"], "summary": rows, "errors": per_image,
                  "seconds_per_image": {rep: [self.runs.get((n, rep), {}).get("seconds")
                                              for n, _ in self.items] for rep in self.reps}}
        return [write_png(folder / "table1.png", self._figure()),
                write_text(folder / "table1.md", "\n".join(md)),
                write_json(folder / "table1.json", record)]

    def _figure(self):
        from .figures import grid

        rows, caps = [], []
        for name, gray in self.items:
            row, cap = [gray], [""]
            for rep in self.reps:
                r = self.runs.get((name, rep))
                row.append(self.recons.get((name, rep)))
                cap.append("" if r is None else r["status"] if "error" not in r
                           else f"{REP_TITLE[rep]} {pct(r['error'])}%")
            rows.append(row)
            caps.append(cap)
        return grid(rows, col_labels=["original"] + [REP_TITLE[r] for r in self.reps],
                    row_labels=[n for n, _ in self.items], captions=caps)


def _mean_std(mean, std) -> str:
    """'26.59 ± 6.0' (%) from fractions, as the README's Table 1 shows them."""
    if mean is None:
        return "—"
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.1f}")


class DeepSection:
    """CaffeNet layers x lambda_V (Table 3, Fig. 6/8), optionally masked (Fig. 9/10)."""

    def __init__(self, key, items, jobs, net, weights: dict, scales=None):
        self.key, self.items, self.jobs, self.net = key, items, jobs, net
        self.weights = weights
        self.scales = scales or {}  # (layer, mask) -> N_Phi of the images' codes (2+ images)
        self.runs: dict = {}     # (image, job) -> record
        self.recons: dict = {}   # (image, job) -> best reconstruction
        self.rows: list[dict] = []
        self.layers = list(dict.fromkeys(j.layer for j in jobs))
        self.lambdas = list(dict.fromkeys(j.lambda_tv for j in jobs))

    def add(self, image, job, inv, scale, files) -> None:
        """Record a finished inversion (a DeepInversion); see :meth:`add_saved`."""
        self.add_saved(image, job, deep_saved(inv, files), scale)

    def add_saved(self, image, job, saved: dict, scale) -> None:
        """Record a finished inversion from what :func:`deep_saved` keeps of it; ``scale``
        is N_Phi of the images' codes at the layer (None for one image)."""
        objective, relative = saved["objective"], saved["relative"]
        codes, files = saved["codes"], saved["files"]
        best = int(np.argmin(objective))
        d = np.sqrt(((codes.reshape(len(codes), -1).astype(np.float64)
                      - saved["code"].reshape(1, -1)) ** 2).sum(axis=1))
        paper = d / scale if scale else None
        rec = {"layer": job.layer, "lambda_tv": saved["lambda_tv"], "variant": job.variant,
               "best_restart": best, "error_relative": relative[best],
               "error": None if paper is None else paper[best], "seconds": saved["seconds"],
               "iterations": saved["iterations"], "files": files,
               "restarts": [{"error_relative": relative[k],
                             "error": None if paper is None else paper[k],
                             "objective": objective[k]} for k in range(len(relative))]}
        self.runs[(image, job)] = rec
        self.recons[(image, job)] = saved["reconstruction"]
        self.rows.append({"image": image, "representation": f"caffenet:{job.layer}",
                          "weights": self._weights_word(), "layer": job.layer,
                          "lambda_tv": rec["lambda_tv"],
                          "variant": job.variant, "restart": best, "error": rec["error"],
                          "error_relative": rec["error_relative"],
                          "objective": objective[best], "iterations": rec["iterations"],
                          "seconds": rec["seconds"], "file": files[best], "status": "ok"})

    def add_failure(self, image, job, status, message) -> None:
        self.runs[(image, job)] = {"layer": job.layer, "status": status, "message": message}
        self.rows.append({"image": image, "representation": f"caffenet:{job.layer}",
                          "weights": self._weights_word(), "layer": job.layer,
                          "lambda_tv": self._lam(job),
                          "variant": job.variant, "status": status})

    def _weights_word(self) -> str:
        return "trained" if (self.weights or {}).get("trained", True) else "untrained"

    def _cells(self):
        """(layer, lambda_tv or None) -> (mean, std, n) of the headline metric over the images
        (None: the paper's lambda_V of the layer)."""
        from .shallow import summarise

        key = "error" if len(self.items) >= 2 else "error_relative"
        cells = {}
        for job in self.jobs:
            vals = [self.runs[(n, job)][key] for n, _ in self.items
                    if (n, job) in self.runs and self.runs[(n, job)].get(key) is not None]
            if vals:
                m, s = summarise(vals)
                cells[(job.layer, job.lambda_tv)] = (m, s if len(vals) > 1 else None, len(vals))
        return cells, key

    def _lam(self, job):
        from .deep import paper_lambda_tv

        return paper_lambda_tv(self.net, job.layer) if job.lambda_tv is None else job.lambda_tv

    def summary(self):
        cells, key = self._cells()
        from .deep import PAPER_TABLE3

        rows = []
        for job in self.jobs:
            lam = self._lam(job)
            c = cells.get((job.layer, job.lambda_tv))
            rows.append({"layer": job.layer, "weights": self._weights_word(),
                         "lambda_tv": lam, "variant": job.variant,
                         "images": 0 if c is None else c[2], "metric": key,
                         "error_mean": None if c is None else c[0],
                         "error_std": None if c is None else c[1],
                         "paper_error": PAPER_TABLE3.get(job.layer, {}).get(lam, None)
                         if not job.variant else None})
        for r in rows:
            if r["paper_error"] is not None:
                r["paper_error"] = round(r["paper_error"] / 100, 6)
        return rows, ["layer", "weights", "lambda_tv", "variant", "images", "metric",
                      "error_mean", "error_std", "paper_error"]

    def record(self) -> dict:
        return {"weights": self.weights, "images": [n for n, _ in self.items],
                "layers": self.layers, "summary": self.summary()[0],
                "runs": [dict(image=i, **v) for (i, _), v in self.runs.items()]}

    def markdown(self) -> list[str]:
        from .deep import table3_markdown

        from .deep import paper_lambda_tv

        cells, key = self._cells()
        lams = list(dict.fromkeys(j.lambda_tv for j in self.jobs))
        variant = self.jobs[0].variant if self.jobs else ""
        title = "CaffeNet layers"
        if variant.startswith("window"):
            title += f", loss on the central {variant[6:]}x{variant[6:]} neurons (Fig. 9)"
        elif variant.startswith("group"):
            title += f", loss on channel group {variant[5:]} of 2 (Fig. 10)"
        md = [f"## {title}", ""]
        w = self.weights
        md.append(f"Weights: {w['source']}" + ("" if w["trained"] else
                                              " — **UNTRAINED, random weights**") + ".")
        md.append("")
        md.append(table3_markdown({k: v[:2] for k, v in cells.items()}, self.layers, lams,
                                  paper=not variant,
                                  paper_lambda=lambda layer: paper_lambda_tv(self.net, layer)))
        md.append("")
        if key == "error":
            md.append("Error % = ‖Φ(x\\*) − Φ₀‖ / N_Φ, N_Φ the mean distance between the codes "
                      f"of these {len(self.items)} images at the layer (Table 3's metric); mean ± "
                      "std over the images.")
        else:
            md.append("Error % = ‖Φ(x\\*) − Φ₀‖ / ‖Φ₀‖ (one image: the paper's N_Φ needs "
                      "several, so the paper's columns use another normaliser and compare only "
                      "roughly).")
        if variant:
            md.append("Errors are measured within the mask.")
        md += ["", f"![reconstructions per layer]({self._figure_name()})"]
        return md

    def _figure_name(self):
        return "figure.png" if self.key == "layers" else f"figure-{self.key}.png"

    def write_figure(self, folder) -> None:
        from .figures import grid

        rows, caps, labels = [], [], []
        lams = list(dict.fromkeys(j.lambda_tv for j in self.jobs))
        for name, rgb in self.items:
            for lam in lams:
                row, cap = [rgb], [""]
                for layer in self.layers:
                    job = next((j for j in self.jobs if j.layer == layer
                                and j.lambda_tv == lam), None)
                    r = self.runs.get((name, job))
                    row.append(self.recons.get((name, job)))
                    if r is None:
                        cap.append("")
                    elif "error_relative" not in r:
                        cap.append(r["status"])
                    else:
                        v = r["error"] if r.get("error") is not None else r["error_relative"]
                        cap.append(f"{pct(v)}%")
                rows.append(row)
                caps.append(cap)
                labels.append(f"{name} lV={lam:g}" if lam is not None and len(lams) > 1
                              else name)
        cell = (227, 227) if len(self.layers) <= 6 else (128, 128)
        title, text = weights_label(self.weights)
        folder.figure(grid(rows, col_labels=["original"] + self.layers, row_labels=labels,
                           captions=caps, cell=cell, title=title), self._figure_name(), text)
