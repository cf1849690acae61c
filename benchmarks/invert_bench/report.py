"""The benchmark's output: one JSON file (everything, samples' statistics included) and one
Markdown file (the tables), written side by side into the output folder.

Files: ``bench-<device>[-quick].json`` and ``.md``, overwritten by the next run of the same
kind, plus (full runs only) a time-stamped copy of the JSON
(``bench-<device>-<YYYYmmdd-HHMMSS>.json``) so that runs can be compared over time.

The JSON is strict (no NaN or Infinity, which many readers refuse): a value that is not
finite (a side that diverged or returned NaN) is written as null, and ``non_finite`` lists
where each one was and what it was.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from . import machine


def _waits(m) -> str:
    w = m.get("openmp_waits") or {}
    return ", ".join(f"{k}={w.get(k) or 'unset'}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))


def _ms(s):
    """Milliseconds with three significant digits."""
    v = s["median_s"] * 1e3
    txt = f"{v:.3g}" if v < 100 else f"{v:.0f}"
    return f"{txt} ±{100 * s['spread']:.0f}%"


def _s(s):
    """Seconds: the median, and the fastest run when there were several."""
    txt = f"{s['median_s']:.2f}"
    return txt + (f" (min {s['min_s']:.2f})" if s["n"] > 1 else "")


def _rate(r):
    if not r:
        return "–"
    return f"{r['value']:.3g} {r['unit']} ({100 * r['fraction']:.0f}%)"


def _num(v, fmt) -> str:
    return "–" if v is None else format(v, fmt)


def _diff(row):
    d = row.get("max_rel_diff")
    if not d:
        return "–"
    # the table shows the max differences; the L2 ones and the 10-step checks are in the JSON
    return " / ".join(_num(v, ".0e") for k, v in d.items()
                      if not k.endswith("_l2") and not k.startswith("steps_"))


def _tols(row):
    return " / ".join(_num(v, ".0e") for v in (row.get("tolerance") or {}).values())


def _ratio(row):
    c = row.get("contention")
    mark = " †" if c is not None and c > 0.1 else ""
    return f"**{row['ratio']:.2f}**{mark}"


def _not_timed(row):
    if row.get("error"):
        why = row["error"]
    else:  # name the checks that failed, the steps checks included
        d, t = row.get("max_rel_diff") or {}, row.get("tolerance") or {}
        bad = [f"{k} {_num(v, '.0e')} > {t[k]:.0e}" for k, v in d.items()
               if not (v is not None and v <= t[k])]
        why = "results differ: " + ", ".join(bad)
    return f"not timed ({why})"


def _sgemm_text(sg) -> str:
    names = {"numpy": "NumPy's BLAS", "torch": "PyTorch's torch.mm"}
    txt = f"SGEMM {sg['gflops']:.0f} GFLOP/s ({names[sg['source']]}, n = {sg['n']}"
    other = [f"{names[k]} {sg[k]:.0f}" for k in ("numpy", "torch")
             if k in sg and k != sg["source"]]
    if other:
        txt += f"; {', '.join(other)}"
    if sg.get("numpy_skipped"):
        txt += f"; NumPy left out: {sg['numpy_skipped']}"
    return txt + ")"


def _memory_text(mem) -> str:
    txt = f"memory read {mem['gbs']:.1f} GB/s (sum of a {mem['megabytes']} MiB array"
    if mem.get("why"):
        txt += f": {mem['why']}"
    return txt + ")"


def markdown(result: dict) -> str:
    m, peaks = result["machine"], result["peaks"]
    sg, mem = peaks["sgemm"], peaks["memory"]
    unit = "ms"
    lines = [
        f"### invert_native vs PyTorch — {result['machine']['device'].upper()}"
        + (" (quick mode: tiny sizes, few repetitions; not a measurement)"
           if result["quick"] else "")
        + (" — INTERRUPTED" if result.get("interrupted") else ""),
        "",
        f"- Machine: {machine.summary(m)}; {m['threads']} thread(s) for both libraries "
        f"(`torch.set_num_threads`, `invert_native.set_num_threads`); OpenMP waits, shared by "
        f"both (one libgomp per process): {_waits(m)}.",
        f"- Measured by the benchmark on {sg.get('threads', m['threads'])} thread(s): "
        f"{_sgemm_text(sg)}, {_memory_text(mem)}; ops whose tensors fit in the caches "
        "named above can pass 100 % of the memory figure.",
        f"- Software: invert_native {m['invert_native']}, PyTorch {m['torch']} "
        f"(CPU capability {m.get('torch_cpu_capability')}), NumPy {m['numpy']}, Python "
        f"{m['python']}, {m['os']}.",
        f"- Load average (1, 5, 15 min) at start {m.get('load_average_start')}, at end "
        f"{m.get('load_average_end')}; run {result['created']}, {result['duration_s']:.0f} s.",
        f"- CaffeNet weights: {result['caffenet']}.",
        "- Times are medians of runs alternating ours / PyTorch after warm-up, ± half the "
        "interquartile range; **ratio = ours / PyTorch (< 1: we are faster)**; rates in "
        "parentheses are fractions of the measured SGEMM rate (GFLOP/s) or memory bandwidth "
        "(GB/s of the bytes the ops must read and write; tensors that stay in cache can pass "
        "100%); *max rel diff* = max|ours − PyTorch| / max|PyTorch| of each result, checked "
        "before timing (gradients also by their relative L2 difference, in the JSON; "
        "per-iteration rows also by a 10-iteration run of invert() through a rate change, "
        "whole runs by their objective histories). benchmarks/README.md says how each "
        "rate and check is computed.",
    ]
    if result.get("interrupted"):
        lines.append("- **Interrupted (Ctrl-C)**: the run stopped early; only the rows "
                     "finished before it are shown.")
    if result.get("non_finite"):
        lines.append(f"- Not finite (null in the JSON): {', '.join(result['non_finite'])}.")
    cont = [r["contention"] for r in result["rows"] if r.get("contention") is not None]
    if cont:
        lines.append(f"- Other processes' CPU use while rows were measured (from /proc/stat): at "
                     f"most {max(cont):.2f} of a core (median {sorted(cont)[len(cont) // 2]:.2f})."
                     " The load average above includes this benchmark's own threads.")
    marked = [r for r in result["rows"] if (r.get("contention") or 0) > 0.1]
    if marked:
        lines.append(f"- † {len(marked)} row(s) were measured while other processes used more "
                     "than 0.1 of a core (from /proc/stat; each was measured up to 3 times and "
                     "the least disturbed kept): read their times with care.")
    for note in result.get("notes", []):
        lines.append(f"- Note: {note}")
    for miss in result.get("missing", []):
        lines.append(f"- Missing: {miss}")
    rows = result["rows"]

    it = [r for r in rows if r["section"] == "per_iteration"]
    if it:
        lines += ["", "#### Per iteration: forward + backward-to-input + regularisers + update", "",
                  f"| representation | batch | ours ({unit}) | PyTorch ({unit}) | ratio | "
                  "ours rate "
                  "| PyTorch rate | max rel diff (target / E / grad) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in it:
            if r["status"] != "ok":
                lines.append(f"| {r['name']} | {r['batch']} | {_not_timed(r)} ||||||")
                continue
            lines.append(f"| {r['name']} | {r['batch']} | {_ms(r['ours'])} | {_ms(r['torch'])} | "
                         f"{_ratio(r)} | {_rate(r.get('ours_rate'))} | "
                         f"{_rate(r.get('torch_rate'))} | {_diff(r)} |")

    ops = [r for r in rows if r["section"] == "per_op"]
    if ops:
        lines += ["", "#### Per op (batch 1; convolutions and fc6/fc7 also at the restarts' "
                  "batch: see the input column)", "",
                  f"| op | input | pass | ours ({unit}) | PyTorch ({unit}) | ratio | ours rate | "
                  "PyTorch rate | max rel diff |",
                  "|---|---|---|---:|---:|---:|---:|---:|---|"]
        for r in ops:
            head = f"| {r['group']} {r['op']} | {r['shape']} | {r['pass']} |"
            if r["status"] != "ok":
                lines.append(f"{head} {_not_timed(r)} |||||")
                continue
            lines.append(f"{head} {_ms(r['ours'])} | {_ms(r['torch'])} | {_ratio(r)} | "
                         f"{_rate(r.get('ours_rate'))} | {_rate(r.get('torch_rate'))} | "
                         f"{_diff(r)} |")

    whole = [r for r in rows if r["section"] == "whole_run"]
    if whole:
        lines += ["", "#### Whole runs (wall time of one inversion)", "",
                  "| run | iterations | ours (s) | PyTorch (s) | ratio of medians | ours rate | "
                  "PyTorch rate | final E ours / PyTorch | feature error ours / PyTorch | "
                  "rel diff (first 10 E / final E) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
        for r in whole:
            if "ours" not in r:  # failed before it was timed
                lines.append(f"| {r['name']} | – | {_not_timed(r)} ||||||||")
                continue
            fe, ee = r["final_objective"], r["feature_error"]
            check = _diff(r) if r["status"] == "ok" else \
                f"**not validated**: {_diff(r)} (tolerance {_tols(r)})"
            lines.append(f"| {r['name']} | {r['iterations']} | {_s(r['ours'])} | "
                         f"{_s(r['torch'])} | {_ratio(r)} | {_rate(r.get('ours_rate'))} | "
                         f"{_rate(r.get('torch_rate'))} | {_num(fe['ours'], '.4g')} / "
                         f"{_num(fe['torch'], '.4g')} | {_num(ee['ours'], '.3f')} / "
                         f"{_num(ee['torch'], '.3f')} | {check} |")
    return "\n".join(lines) + "\n"


def prepare_out(out_dir: str) -> str | None:
    """Create the output folder; None, or why it cannot hold the report (one line)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except FileExistsError:
        return f"--out {out_dir}: a file is in the way (give a folder)"
    except OSError as exc:
        return f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})"
    if not os.path.isdir(out_dir):
        return f"--out {out_dir}: not a folder"
    if not os.access(out_dir, os.W_OK | os.X_OK):
        return f"--out {out_dir}: the folder is not writable"
    return None


def strict(value, where="", found=None):
    """``value`` with every non-finite float replaced by None; ``found`` collects
    'where: value' of each."""
    if isinstance(value, dict):
        return {k: strict(v, f"{where}.{k}" if where else str(k), found)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    try:
        f = float(value)  # NumPy scalars too
    except (TypeError, ValueError):
        return str(value)
    if math.isfinite(f):
        return int(value) if isinstance(value, np.integer) else f
    if found is not None:
        found.append(f"{where}: {f}")
    return None


def write(result: dict, out_dir: str) -> list[str]:
    """Write the JSON (strict: see the module doc) and the Markdown; returns the paths."""
    found = []
    clean = strict(result, "", found)
    if found:
        clean["non_finite"] = result["non_finite"] = found
    os.makedirs(out_dir, exist_ok=True)
    stem = f"bench-{result['machine']['device']}" + ("-quick" if result["quick"] else "")
    paths = []
    text = json.dumps(clean, indent=1, allow_nan=False)
    names = [f"{stem}.json"]
    if not result["quick"]:
        names.append(f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.localtime())}.json")
    for name in names:
        path = os.path.join(out_dir, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        paths.append(path)
    path = os.path.join(out_dir, f"{stem}.md")
    with open(path, "w") as f:
        f.write(markdown(clean))
    paths.append(path)
    return paths
