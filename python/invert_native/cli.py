"""The ``invert-native`` command line.

Commands: ``info`` (the build), ``bench`` (benchmarks), and the paper's experiments:
``demo`` (HOG/HOGb/DSIFT of bundled photos, CaffeNet layers with ``--weights``), ``invert``
(one image, one representation), ``evaluate`` (Table 1 on the user's images) and ``layers``
(CaffeNet: Table 3, Fig. 6/8/9/10). The experiments write results folders laid out as
:mod:`invert_native.experiments.results` documents, show tqdm progress bars on stderr
(``--quiet`` hides them), stop cleanly on Ctrl-C (exit 130, finished inversions kept), go
on after Ctrl-C or a crash with ``--resume`` (each finished inversion's .npz is read back),
and report bad input as one line on stderr with exit status 2 (``--debug`` shows tracebacks).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .experiments.report import (REP_TITLE, DeepSection, Run, ShallowSection,
                                 deferred_interrupt, now, pct)
from ._argtypes import real_number, whole_number
from .experiments.results import LAYOUT, slug


def _info(args) -> int:
    import invert_native as inv
    from invert_native import nn

    print(f"invert_native {inv.__version__}")
    from invert_native import _cpu

    print(f"CPU core: {inv.get_num_threads()} OpenMP thread(s), SGEMM kernel "
          f"{_cpu.sgemm_kernel()}")
    status = inv.cuda_available()
    print(f"CUDA core: {'available, ' if status else 'not available: '}{status.reason}")

    # A CaffeNet-like block, forward and backward, as a smoke test of the core.
    rng = np.random.default_rng(0)
    net = nn.Sequential([
        ("conv1", nn.Conv2d(rng.standard_normal((96, 3, 11, 11), np.float32) * 0.01, stride=4)),
        ("relu1", nn.ReLU()),
        ("mpool1", nn.MaxPool2d(3, 2)),
        ("norm1", nn.LRN(5, 1e-4, 0.75, 1.0)),
    ])
    x = rng.standard_normal((1, 3, 227, 227), np.float32) * 50
    t0 = time.perf_counter()
    y = net.forward(x)
    dx = net.backward(np.ones_like(y))
    dt = time.perf_counter() - t0
    ok = bool(np.isfinite(dx).all()) and dx.shape == x.shape
    print(f"conv1..norm1 forward+backward on 227x227: output {tuple(y.shape)}, "
          f"{dt * 1e3:.1f} ms, {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


# ======================================================================================
# demo, invert, evaluate, layers
# ======================================================================================

EXIT_FAILURE = 1      # a run failed (diverged, or an unexpected error)
EXIT_USAGE = 2        # bad input: options, images, weights, device
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), what shells use

SHALLOW = ("hog", "hogb", "dsift")
# smallest image side each shallow representation accepts (HOG: 2 x 2 cells of 8 pixels,
# (side + 4) // 8 >= 2; the Table 1 DSIFT: one descriptor, 4 bins of 5 pixels with a border)
MIN_SIDE = {"hog": 12, "hogb": 12, "dsift": 16}
CAFFENET_MIN_SIDE = 11  # conv1's receptive field: smaller images carry no pattern conv1 sees
DEMO_PHOTOS = ("astronaut", "camera", "chelsea", "coffee")
DEMO_SIZE = (192, 256)
QUICK_PHOTOS = ("astronaut", "camera")
QUICK_SIZE = (96, 128)
QUICK_ITERATIONS = 200  # --quick: the schedule shrunk to this many iterations

EXIT_HELP = ("exit status: 0 done, 1 a run failed (e.g. diverged), 2 bad input, 130 "
             "interrupted (Ctrl-C).\n")

_EXAMPLES = """\
examples:
  invert-native demo                         HOG, HOGb, DSIFT of bundled photos (no download)
  invert-native demo --quick                 the same in a few seconds
  invert-native demo --weights caffenet-12.onnx     ... and CaffeNet layers (Fig. 6)
  invert-native invert photo.jpg --rep hogb -o photo-hogb.png
  invert-native invert photo.jpg --rep caffenet:relu5 --weights caffenet-12.onnx -o r5.png
  invert-native evaluate *.jpg --rep hog,hogb,dsift -o table1/
  invert-native evaluate *.jpg --rep hog,hogb,dsift -o table1/ --resume   (after Ctrl-C)
  invert-native layers photo.jpg --weights caffenet-12.onnx --lambda-tv 0.5,5,50
  invert-native layers photo.jpg --weights caffenet-12.onnx --window 5     (Fig. 9)
  invert-native layers photo.jpg --weights caffenet-12.onnx --group 1      (Fig. 10)

""" + EXIT_HELP


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the full usage is one --help away)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class CliError(Exception):
    """A problem with the user's input: one line on stderr, exit status 2."""


# ------------------------------------------------------------------ console
class _Console:
    """Notes and warnings on stderr (printed above the progress bars), progress bars."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.notes: list[str] = []
        self.warnings: list[str] = []

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        if not self.quiet:
            self._write(f"note: {msg}")

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self._write(f"invert-native: warning: {msg}")  # even with --quiet

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def bar(self, **kwargs):
        from tqdm import tqdm

        return tqdm(disable=self.quiet, file=sys.stderr, dynamic_ncols=True, **kwargs)


class _InversionBar:
    """A progress bar over one inversion's iterations; ``callback`` goes to ``invert``."""

    def __init__(self, console: _Console, desc: str, total: int, leave: bool):
        self.bar = console.bar(desc=desc, total=total, unit="it", leave=leave)

    def callback(self, it, objective) -> None:
        self.bar.update(it - self.bar.n)
        self.bar.set_postfix_str(f"E={float(np.min(objective)):.4g}", refresh=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        return False


# ------------------------------------------------------------------ parsing helpers
def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 192x256, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    if max(h, w) > MAX_SIZE_SIDE:
        raise argparse.ArgumentTypeError(f"each side must be at most {MAX_SIZE_SIDE} pixels, "
                                         f"got {text!r}")
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit, as for input images
    if limit and h * w > limit:
        raise argparse.ArgumentTypeError(f"{text!r} is {h * w} pixels, more than Pillow's "
                                         f"limit of {limit} (Image.MAX_IMAGE_PIXELS)")
    return h, w


# --size: the largest side; the codes, gradients and restarts of a larger image would take
# gigabytes (40000x40000 is a MemoryError), and no input image above Pillow's limit is read
MAX_SIZE_SIDE = 8192


MIN_MAX_SIDE = 16  # the smallest side any representation here accepts (DSIFT's)


def _max_side(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v != 0 and v < MIN_MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or at least {MIN_MAX_SIDE} "
                                         f"pixels, got {v}")
    return v


def _layer_list(text: str) -> list[str]:
    """--layers: CaffeNet layer names, checked here so that no command loads weights or
    images (or, in demo, silently ignores the option) for a list it cannot run."""
    from .representations.caffenet import CAFFENET_LAYERS

    names = _names(text)
    if not names:
        raise argparse.ArgumentTypeError(
            f"the layer list {text!r} is empty: give layers separated by commas, e.g. "
            "conv1,relu3,fc8")
    for name in names:
        if name not in CAFFENET_LAYERS:
            raise argparse.ArgumentTypeError(f"unknown layer {name!r}; CaffeNet's layers are: "
                                             f"{', '.join(CAFFENET_LAYERS)}")
    return names


_positive_int = whole_number(1)
_seed = whole_number(0)  # NumPy's generators refuse negative seeds, deep inside an inversion
_learning_rate = real_number(0.0, strict=True)
_lambda = real_number(0.0, strict=False)


def _lambda_list(text: str) -> list[float]:
    vals = [_lambda(v) for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("expected numbers separated by commas, e.g. 0.5,5,50")
    return list(dict.fromkeys(vals))


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(v.strip().lower() for v in text.split(",") if v.strip()))


def _shallow_reps(text: str) -> list[str]:
    reps = _names(text)
    for r in reps:
        if r not in SHALLOW:
            hint = ("; CaffeNet layers are inverted by `invert-native layers`"
                    if r.startswith("caffenet") else "")
            raise CliError(f"unknown representation {r!r}: choose from {', '.join(SHALLOW)}{hint}")
    if not reps:
        raise CliError("--rep is empty: give hog, hogb and/or dsift")
    return reps


def _parse_rep(text: str) -> tuple[str, str | None]:
    """'hog' -> ('hog', None); 'caffenet:relu5' -> ('caffenet', 'relu5')."""
    from .representations.caffenet import CAFFENET_LAYERS

    t = text.strip().lower()
    if t in SHALLOW:
        return t, None
    if t.startswith("caffenet"):
        layer = t.partition(":")[2].strip()  # "caffenet: conv1" as "caffenet:conv1"
        if not layer:
            raise CliError(f"--rep {text}: name the layer, e.g. caffenet:relu5 (layers: "
                           f"{', '.join(CAFFENET_LAYERS)})")
        if layer not in CAFFENET_LAYERS:
            raise CliError(f"unknown CaffeNet layer {layer!r}; the layers are: "
                           f"{', '.join(CAFFENET_LAYERS)}")
        return "caffenet", layer
    raise CliError(f"unknown representation {text!r}: choose hog, hogb, dsift or caffenet:LAYER")


# ------------------------------------------------------------------ environment
def _setup(args, console: _Console) -> dict:
    """Threads and device; returns what the report records about the machine."""
    import invert_native as inv

    if getattr(args, "threads", None):
        inv.set_num_threads(args.threads)
    device = getattr(args, "device", "cpu")
    if device == "cuda":
        status = inv.cuda_available()
        if not status:
            raise CliError(f"--device cuda: CUDA is not available: {status.reason}")
    return {"invert_native": inv.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "device": device, "cpu_threads": inv.get_num_threads()}


def _default_out(command: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("results") / f"{command}-{stamp}"
    out, k = base, 2
    while out.exists():
        out = base.with_name(f"{base.name}-{k}")
        k += 1
    return out


def _out_folder(args, command: str, inputs=()) -> Path:
    """The results folder, created and checked writable; none of ``inputs`` (images,
    weights) may be a file the run writes there (the LAYOUT's names)."""
    import fnmatch

    out = Path(args.out) if args.out else _default_out(command)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: exists and is not a folder")
    here = os.path.realpath(out)
    for path in inputs:
        rel = os.path.relpath(os.path.realpath(path), here)
        if any(fnmatch.fnmatch(rel, pattern) for pattern in _WRITTEN):
            raise CliError(f"--out {out}: the run would replace its input {path}; choose "
                           "another folder")
    if out.is_dir() and any(out.iterdir()) and not (args.force or args.resume):
        raise CliError(f"--out {out}: the folder is not empty; choose another, pass --resume "
                       "to go on with the run it holds, or --force (files of the same names "
                       "are replaced, others kept)")
    _writable_folder(out, f"--out {out}")
    return out


# what a folder command writes into its results folder (results.LAYOUT)
_WRITTEN = ("report.md", "report.json", "results.csv", "summary*.csv", "figure*.png",
            os.path.join("images", "*"))


def _writable_folder(folder: Path, option: str) -> None:
    """Create ``folder`` and check that a file can be written in it: a run must not fail at
    its end, after the inversions, for want of a place to put them. ``option`` ('-o OUT')
    starts the error message."""
    import tempfile

    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise CliError(f"{option}: {parent} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{option}: cannot create the folder {folder} "
                       f"({exc.strerror or _one_line(exc)})") from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".invert-native-"):
            pass
    except OSError as exc:
        raise CliError(f"{option}: cannot write into the folder {folder} "
                       f"({exc.strerror or _one_line(exc)})") from None


def _input_paths(args) -> list[str]:
    """The files a command reads: its images and the weights."""
    paths = list(getattr(args, "images", None) or [])
    if getattr(args, "weights", None):
        paths.append(args.weights)
    return paths


def _check_resume(out: Path, command: str, settings: dict) -> None:
    """--resume: the folder's run (report.json) must be this command with these settings;
    raises CliError naming the first setting that differs. A folder with no run yet passes."""
    import json

    from .experiments.results import jsonable

    report = out / "report.json"
    if not report.is_file():
        if any((out / "images").glob("*.npz")):
            raise CliError(f"--resume {out}: the folder holds inversions but no report.json, "
                           "so the settings they were run with are unknown: choose another "
                           "folder, or --force without --resume to start over")
        return
    try:
        old = json.loads(report.read_text(encoding="utf-8"))
        old_command, old_settings = old["command"], old["settings"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"--resume {out}: cannot read the run's report.json "
                       f"({_one_line(exc)})") from None
    if old_command != command:
        raise CliError(f"--resume {out}: the folder holds an `invert-native {old_command}` run, "
                       f"not `{command}`")
    key, was, now_ = _first_difference(old_settings, jsonable(settings))
    if key is not None:
        raise CliError(f"--resume {out}: the setting {key!r} differs: the folder's run had "
                       f"{_short(was)}, this one has {_short(now_)}")


def _first_difference(old: dict, new: dict, prefix: str = ""):
    """(key, old value, new value) of the first setting that differs (None, None, None if
    none); within a dict-valued setting (e.g. images) the key is 'images.<name>'."""
    for key in list(new) + [k for k in old if k not in new]:
        a, b = old.get(key), new.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(a, b, f"{prefix}{key}.")
            return f"{prefix}{key}", a, b
    return None, None, None


def _short(value, limit: int = 60) -> str:
    import json

    if value is None:
        return "none"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _image_paths(images) -> dict:
    """{name: absolute path} of a run's images: --resume then accepts the same files however
    they are typed (a.jpg, ./a.jpg, an absolute path, from another working directory)."""
    return {im.name: os.path.realpath(im.path) for im in images}


def _inputs_digest(*arrays_of) -> str:
    """A digest of the pixels a run inverts (so --resume notices a changed input file)."""
    import hashlib

    h = hashlib.sha256()
    for items in arrays_of:
        for name, a in items:
            a = np.ascontiguousarray(a, np.float32)
            h.update(f"{name}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def _start(args, out: Path, command: str, machine: dict, settings: dict, console) -> Run:
    """The Run of a folder command, after checking --resume's folder against the settings."""
    if args.resume:
        _check_resume(out, command, settings)
        # a crash (kill -9) in the middle of an atomic write leaves its temporary file
        for tmp in [*out.glob(".*.tmp"), *(out / "images").glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
    return Run(console, out, command, args.argv, machine, settings, resume=args.resume)


# ------------------------------------------------------------------ images
class _Image:
    """An input image: name (unique in the run), path, RGB float32 H x W x 3 in [0, 255]."""

    def __init__(self, name, path, rgb, grey):
        self.name, self.path, self.rgb, self.grey = name, path, rgb, grey

    @property
    def gray(self) -> np.ndarray:
        from .experiments.shallow import to_gray

        return self.rgb[..., 0].copy() if self.grey else to_gray(self.rgb)


def _load_image(path: str, console: _Console) -> _Image:
    """Read an image with Pillow; converts grey, palette, alpha, 16-bit and CMYK images to RGB
    in [0, 255] and says so. Raises CliError with one line for anything unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise CliError(f"{path}: no such file")
    if p.is_dir():
        raise CliError(f"{path}: is a folder, not an image")
    try:
        # Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) stays in force: above it
        # Pillow only warns (an error above twice it); both refuse the image here
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                im = ImageOps.exif_transpose(im)  # phone photos store their rotation in EXIF
    except PermissionError:
        raise CliError(f"{path}: cannot read it (permission denied)") from None
    except UnidentifiedImageError:
        raise CliError(f"{path}: not an image Pillow can read (corrupt, empty, or an "
                       "unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CliError(f"{path}: refused as too large, a possible decompression bomb "
                       f"({_one_line(exc)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CliError(f"{path}: cannot decode the image, it looks truncated or corrupt "
                       f"({first})") from None
    mode, grey = im.mode, False
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
        grey = mode in ("LA",)
        console.note(f"{path} has an alpha channel ({mode}): composited over white")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, np.float64)
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:  # a float image (TIFF) can hold NaN or infinity, which no inversion can use
            raise CliError(f"{path}: {bad} of its {a.size} pixels are not finite numbers (NaN "
                           "or infinity)")
        top = float(a.max()) if a.size else 0.0
        if im.mode.startswith("I;16") or (im.mode == "I" and 255 < top <= 65535):
            a, how = a / 257.0, "16-bit values scaled to [0, 255]"
        elif im.mode == "F" and top <= 1.0:
            a, how = a * 255.0, "float values in [0, 1] scaled to [0, 255]"
        elif top > 255:
            a, how = a * (255.0 / top), "values scaled by their maximum to [0, 255]"
        else:
            how = "values used as they are"
        console.note(f"{path} is a {im.mode} image: {how}")
        rgb = np.repeat(np.clip(a, 0, 255).astype(np.float32)[..., None], 3, axis=2)
        grey = True
    else:
        if im.mode in ("L", "1"):
            grey = True
            im = im.convert("L").convert("RGB")
        elif im.mode == "P":
            im = im.convert("RGB")
        elif im.mode != "RGB":
            console.note(f"{path} is {im.mode}: converted to RGB")
            im = im.convert("RGB")
        rgb = np.asarray(im, np.float32)
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise CliError(f"{path}: the image is empty ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
    return _Image(slug(p.stem), str(path), np.ascontiguousarray(rgb), grey)


def _load_images(paths, console) -> list[_Image]:
    """The images, each with a name of its own: a name taken by an earlier image (the same
    file name in two folders, or a.png beside A.jpg) gets the first free -2, -3, ... suffix.
    Names are compared ignoring case, as results folders may be on a case-insensitive disk."""
    images, used = [], set()
    for path in paths:
        im = _load_image(path, console)
        name, k = im.name, 2
        while name.casefold() in used:
            name, k = f"{im.name}-{k}", k + 1
        if name != im.name:
            console.note(f"{path}: named {name} in the results ({im.name} is taken by another "
                         "image)")
            im.name = name
        used.add(name.casefold())
        images.append(im)
    return images


def _check_distinct_files(paths, why: str) -> None:
    """CliError when every image is the same file (e.g. given twice)."""
    files = {os.path.realpath(p) for p in paths}
    if len(paths) >= 2 and len(files) == 1:
        raise CliError(f"{paths[0]}: the same image given {len(paths)} times: {why}")


def _resize_max_side(a: np.ndarray, max_side: int) -> np.ndarray:
    from .experiments.shallow import fit

    h, w = a.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return a
    s = max_side / max(h, w)
    return fit(a, (max(1, round(h * s)), max(1, round(w * s))))


def _check_shallow_size(name: str, rep_name: str, rep, shape, where: str) -> None:
    h, w = shape[:2]
    need = MIN_SIDE[rep_name]
    msg = (f"{name}: {h}x{w} pixels{where} is too small for {REP_TITLE[rep_name]}: it needs "
           f"at least {need}x{need}")
    if min(h, w) < need:
        raise CliError(msg)
    try:  # the representation's own check, for anything the table misses
        rep.forward(np.zeros((1, 1, h, w), np.float32))
    except ValueError:
        raise CliError(msg) from None


# ------------------------------------------------------------------ weights
def _check_weights_path(args) -> None:
    """The cheap checks of --weights / --random-weights, made before any image is read."""
    from .experiments import deep

    if args.weights and args.random_weights:
        raise CliError("give --weights FILE or --random-weights, not both")
    if not args.weights and not args.random_weights:
        raise CliError("CaffeNet needs --weights FILE (.onnx or .npz), or --random-weights for "
                       "an untrained net. " + deep.WEIGHTS_HELP)
    if args.weights and os.path.isdir(args.weights):
        raise CliError(f"--weights {args.weights}: is a folder, not a weights file (.onnx or "
                       ".npz)")


def _load_net(args, console: _Console):
    """CaffeNet from --weights, or untrained with --random-weights (and a loud warning)."""
    from .experiments import deep

    _check_weights_path(args)
    try:
        net = deep.load_caffenet(args.weights, random=args.random_weights, seed=args.seed,
                                 device=args.device)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except ImportError as exc:
        raise CliError(f"--weights {args.weights}: {exc}") from None
    except (ValueError, KeyError, OSError, EOFError) as exc:
        # OnnxError and CaffeNet's shape checks are ValueErrors; a damaged .npz is a
        # BadZipFile (OSError-like) or ValueError
        raise CliError(f"--weights {args.weights}: not usable CaffeNet weights: "
                       f"{_one_line(exc)}") from None
    except Exception as exc:  # zipfile.BadZipFile, protobuf errors
        raise CliError(f"--weights {args.weights}: cannot read the weights: "
                       f"{_one_line(exc)}") from None
    if not net.trained:
        what = ("--random-weights" if args.random_weights else
                f"--weights {args.weights} was saved from an untrained net")
        console.warn(f"UNTRAINED random CaffeNet weights ({what}): the reconstructions "
                     "show what the architecture alone keeps, not what CaffeNet learned")
    return net


def _weights_setting(args) -> str:
    """The weights, as a run's settings record them (--resume compares them)."""
    if args.random_weights:
        return f"random (seed {args.seed})"
    return str(Path(args.weights).resolve())


def _weights_record(args, net) -> dict:
    return {"file": args.weights, "trained": bool(net.trained), "source": net.source,
            "order": getattr(net, "order", None)}


# ------------------------------------------------------------------ sweeps
def _iterations_of(rep, iterations) -> int:
    return int(iterations) if iterations else sum(n for _, n in rep.paper_schedule)


def _sweep_shallow(run: Run, section: ShallowSection, args, outer) -> None:
    """Invert every image x representation of the section; record each as it finishes
    (with --resume, read back those the folder already holds instead)."""
    from .experiments.report import shallow_saved
    from .experiments.shallow import invert_image, make_representation

    for name, gray in section.items:
        run.folder.image(f"{name}__original", gray)
        for rep_name in section.reps:
            stem = f"{name}__{rep_name}"
            if _restore(run, stem, f"{name} {rep_name}",
                        lambda saved: section.add_saved(name, rep_name, saved),
                        lambda status, msg: section.add_failure(name, rep_name, status, msg)):
                outer.update(1)
                continue
            rep = make_representation(rep_name)
            total = _iterations_of(rep, args.iterations)
            t0 = time.perf_counter()
            with _InversionBar(run.console, f"{name} {REP_TITLE[rep_name]}", total,
                               leave=False) as bar:
                try:
                    inv = invert_image(rep_name, gray, rep, device=args.device,
                                       lambda_tv=args.lambda_tv, callback=bar.callback,
                                       **_optimiser_options(rep, args))
                except Exception as exc:  # diverged, or failed: recorded, the sweep goes on
                    if args.debug:
                        raise
                    inv = None
                    _record_failure(run, stem, f"{name} {rep_name}", exc,
                                    lambda status, msg: section.add_failure(name, rep_name,
                                                                            status, msg))
            if inv is not None:
                best = int(np.argmin(inv.result.objective[-1]))
                with deferred_interrupt():
                    file = run.folder.image(stem, inv.reconstructions[best])
                    saved = shallow_saved(inv, time.perf_counter() - t0, file)
                    run.folder.save_inversion(stem, saved, run.settings_digest)
                section.add_saved(name, rep_name, saved)
            outer.update(1)
            run.refresh()


def _sweep_deep(run: Run, section: DeepSection, args, outer) -> None:
    """Invert every job x image of the section (see :func:`_sweep_shallow`)."""
    from .experiments import deep
    from .experiments.report import deep_saved
    from .experiments.results import weights_label

    net = section.net
    for name, rgb in section.items:
        run.folder.image(f"{name}__original", rgb)
    for job in section.jobs:
        scale = section.scales.get((job.layer, job.mask))
        rep = net.representation(job.layer)
        total = _iterations_of(rep, args.iterations)
        for name, rgb in section.items:
            lam = section._lam(job)
            stem = f"{name}__{job.layer}__lv{lam:g}" + (f"__{job.variant}"
                                                        if job.variant else "")
            what = f"{name} {job.label(lam)}"
            fail = lambda status, msg: section.add_failure(name, job, status, msg)  # noqa: E731
            if _restore(run, stem, what,
                        lambda saved: section.add_saved(name, job, saved, scale), fail):
                outer.update(1)
                continue
            with _InversionBar(run.console, what, total, leave=False) as bar:
                try:
                    inv = deep.invert_layer(net, rgb, job, callback=bar.callback,
                                            **_optimiser_options(rep, args))
                except Exception as exc:  # diverged, or failed: recorded, the sweep goes on
                    if args.debug:
                        raise
                    inv = None
                    _record_failure(run, stem, what, exc, fail)
            if inv is not None:
                with deferred_interrupt():
                    text = weights_label(section.weights)[1]
                    if len(inv.reconstructions) == 1:
                        files = [run.folder.image(stem, inv.reconstructions[0], text)]
                    else:
                        files = [run.folder.image(f"{stem}__r{k}", r, text)
                                 for k, r in enumerate(inv.reconstructions)]
                    saved = deep_saved(inv, files)
                    run.folder.save_inversion(stem, saved, run.settings_digest)
                section.add_saved(name, job, saved, scale)
            outer.update(1)
            run.refresh()


def _restore(run: Run, stem: str, what: str, add, add_failure) -> bool:
    """With --resume: record the inversion ``stem`` from its .npz if the folder holds one
    (finished or failed); True if it did, and the inversion is not to be run again."""
    if not run.resume:
        return False
    saved = run.folder.load_inversion(stem, run.settings_digest)
    if saved is None:
        return False
    if "status" in saved:  # it failed in the first run: it would fail again
        run.failed += 1
        run.console.warn(f"{what}: {saved['message']}")
        add_failure(saved["status"], saved["message"])
    else:
        add(saved)
    run.restored += 1
    return True


def _record_failure(run: Run, stem: str, what: str, exc: Exception, add_failure) -> None:
    """A diverged or failed inversion: warn, record it in the tables and in its .npz."""
    status = _status(exc)
    message = _diverged(exc) if status == "diverged" else _one_line(exc)
    if status == "failed" and not isinstance(exc, ValueError):  # unexpected: say what it was
        message = f"{type(exc).__name__}: {message}"
    run.failed += 1
    run.console.warn(f"{what}: {message}")
    add_failure(status, message)
    run.folder.save_inversion(stem, {"status": status, "message": message},
                              run.settings_digest)


def _optimiser_options(rep, args) -> dict:
    """invert()'s options from the command line: restarts, seed, and the schedule (the
    representation's paper schedule, its rates scaled to start at --learning-rate and its
    length stretched to --iterations), --lambda-alpha."""
    opts = {"restarts": args.restarts, "seed": args.seed, "iterations": args.iterations}
    if args.learning_rate is not None:
        schedule = [(float(r), int(n)) for r, n in rep.paper_schedule]
        scale = args.learning_rate / schedule[0][0]
        opts["learning_rate"] = _stretch([(r * scale, n) for r, n in schedule],
                                         args.iterations)
        opts["iterations"] = None  # the schedule carries its length
    if args.lambda_alpha is not None:
        opts["lambda_alpha"] = args.lambda_alpha
    return opts


def _stretch(schedule, iterations):
    """(rate, iterations) segments stretched or shrunk to ``iterations`` in all, keeping
    their proportions, as invert() does with its default schedule."""
    if not iterations:
        return schedule
    total = sum(n for _, n in schedule)
    cuts = [round(iterations * sum(n for _, n in schedule[:i + 1]) / total)
            for i in range(len(schedule))]
    return [(r, c - p) for (r, _), c, p in zip(schedule, cuts, [0] + cuts[:-1]) if c > p]


def _diverged(exc) -> str:
    """A diverged inversion in the command line's terms: invert()'s message, which says what
    happened and which setting to lower, with its argument names turned into the options."""
    text = _one_line(exc)
    for name, option in (("learning_rate", "--learning-rate"), ("lambda_tv", "--lambda-tv"),
                         ("lambda_alpha", "--lambda-alpha")):
        text = re.sub(rf"\b{name}\b", option, text)
    if "--" not in text:  # no advice in the message
        text += "; rerun with a smaller --learning-rate (the schedule starts at 0.004)"
    return f"the inversion diverged: {text}"


def _status(exc) -> str:
    from .invert import InversionDiverged

    return "diverged" if isinstance(exc, InversionDiverged) else "failed"


def _finish(run: Run, args, interrupted: bool) -> int:
    """Final report, one summary line; the exit status."""
    status = "interrupted" if interrupted else "complete"
    run.refresh(status)
    out = run.folder.path
    done = sum(len(s.runs) for s in run.sections)
    if interrupted:
        print(f"invert-native: interrupted; kept {done} finished inversion(s) in {out}/ "
              f"(the same command with --resume -o {out} goes on)", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        for s in run.sections:
            print("\n".join(_first_table(s.markdown())) + "\n")
    print(f"wrote {out}/ (report.md, report.json, results.csv, summary.csv, figure.png, "
          "images/)")
    if run.failed:
        print(f"invert-native: {run.failed} inversion(s) diverged or failed (see "
              f"{out}/report.md)",
              file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _first_table(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if line.startswith("|"):
            out.append(line)
        elif out:
            break
    return out


def _run_sweeps(run: Run, args, plans) -> int:
    """plans: [(section, sweep function, count)]: run them under one outer progress bar."""
    total = sum(n for _, _, n in plans)
    for section, _, _ in plans:
        run.sections.append(section)
    interrupted = False
    with run.console.bar(desc=run.command, total=total, unit="inv") as outer:
        try:
            # a resumed run keeps the folder's report (its settings) until it has its own
            if not (run.resume and (run.folder.path / "report.json").is_file()):
                run.refresh()
            for section, sweep, _ in plans:
                sweep(run, section, args, outer)
        except KeyboardInterrupt:
            interrupted = True
    if run.resume:
        run.folder.report["resumed"] = {"restored": run.restored, "run": total - run.restored}
        if not args.quiet:
            print(f"resumed: {run.restored} of {total} inversion(s) read back from "
                  f"{run.folder.path}/, {total - run.restored} run", file=sys.stderr)
    return _finish(run, args, interrupted)


# ------------------------------------------------------------------ shallow set-up
def _shallow_section(items, reps, args, console) -> ShallowSection:
    """Check sizes, compute each representation's normalisers on the set's codes."""
    from .experiments.shallow import make_representation, set_scale

    if len(items) < 2:
        raise CliError("Table 1 needs at least 2 images: the error is normalised by the mean "
                       "distance between the images' codes (N_Phi)")
    _check_distinct_pixels(items, "")
    size = items[0][1].shape
    scales = {}
    for rep_name in reps:
        rep = make_representation(rep_name)
        _check_shallow_size("the images", rep_name, rep, size, "")
        codes = np.stack([rep.forward(np.ascontiguousarray((g - 128.0)[None, None]))[0]
                          for _, g in items])
        for (name, _), c in zip(items, codes):
            if not np.any(c):
                raise CliError(f"{name}: its {REP_TITLE[rep_name]} code is all zeros (a blank "
                               "image?): there is nothing to invert")
        scale = set_scale(codes)
        norms = np.sqrt((codes.astype(np.float64) ** 2).reshape(len(codes), -1).sum(axis=1))
        mean_norm = float(norms.mean())
        if _check_spread(scale[0], mean_norm, f"{REP_TITLE[rep_name]} codes"):
            _warn_near_copies(console, f"{REP_TITLE[rep_name]} codes",
                              f"= {scale[0]:.3g}, {100 * scale[0] / mean_norm:.2g} %")
        scales[rep_name] = scale
    return ShallowSection(items, reps, size, scales, {})


_NEEDS_TWO = "the paper's metric needs at least two different images"


def _check_distinct_pixels(items, hint: str) -> None:
    """CliError when every image of the set has the same pixels (after resizing), before
    the codes are computed: the message can then say what is wrong."""
    first = items[0][1]
    if all(a.shape == first.shape and np.array_equal(a, first) for _, a in items[1:]):
        raise CliError(f"the images {', '.join(n for n, _ in items)} are identical (the same "
                       f"pixels at the size they are inverted at): {_NEEDS_TWO}{hint}")


# N_Phi below this fraction of the codes' mean norm is rounding noise: the codes do not differ
SPREAD_TOLERANCE = 1e-6


# N_Phi below this fraction of the codes' mean norm: the images are nearly the same, and
# errors divided by N_Phi come out in the hundreds or thousands of percent. Measured at 64x64
# on scikit-image's astronaut: its grey copy gives HOG 2.2 %, HOGb 0.34 %, DSIFT 0.23 %; its
# JPEG copy (quality 90) HOG 6.7 % (hard orientation bins flip), HOGb 1.7 %, DSIFT 0.98 %;
# +0/+1 grey-level noise HOG 2.6 %, HOGb 0.5 %, DSIFT 0.29 %. Different photos (astronaut,
# camera, chelsea) give 73-100 %.
NEAR_SPREAD = 0.1


def _check_spread(n_phi: float, mean_norm: float, what: str, hint: str = "") -> bool:
    """CliError unless N_Phi, the mean distance between the set's codes, is more than
    rounding noise next to their mean norm; the paper's metric divides by it. True when it is
    under NEAR_SPREAD of the norm: near-copies, whose errors come out inflated."""
    if not (np.isfinite(n_phi) and n_phi > SPREAD_TOLERANCE * mean_norm):
        raise CliError(f"the images' {what} do not differ (N_Phi = {n_phi:.3g}; identical or "
                       f"blank images?): {_NEEDS_TWO}{hint}")
    return n_phi < NEAR_SPREAD * mean_norm


def _warn_near_copies(console: _Console, what: str, detail: str) -> None:
    console.warn(f"the images' {what} barely differ (N_Phi {detail} of the codes' mean norm): "
                 "the images are nearly identical (copies of one photo?), and the paper's "
                 "metric divides by N_Phi, so the errors will be inflated, possibly far above "
                 "100 %; give different images")


def _common_size(images, size, max_side, console) -> tuple[int, int]:
    if size:
        return size
    h = min(im.rgb.shape[0] for im in images)
    w = min(im.rgb.shape[1] for im in images)
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        h, w = max(1, round(h * s)), max(1, round(w * s))
    return h, w


# ------------------------------------------------------------------ commands
def _cmd_invert(args) -> int:
    from .experiments import deep
    from .experiments.figures import grid
    from .experiments.results import weights_label, write_json, write_png
    from .experiments.shallow import fit, invert_image, make_representation
    from .invert import InversionDiverged

    console = _Console(args.quiet)
    t_start = time.perf_counter()
    kind, layer = _parse_rep(args.rep)
    if kind == "caffenet" and (args.color or args.size):
        raise CliError("--color and --size apply to hog/hogb/dsift; CaffeNet takes 227x227 "
                       "colour images")
    if kind == "dsift" and args.color:
        raise CliError("--color: DSIFT is defined on grey images (use hog or hogb)")
    if args.restarts > 64:
        raise CliError(f"--restarts {args.restarts}: at most 64 (restarts run as one batch)")
    out = Path(args.output) if args.output else Path(
        f"{slug(Path(args.image).stem)}-{args.rep.replace(':', '-').lower()}.png")
    if out.suffix.lower() != ".png":
        raise CliError(f"-o {out}: the output must be a .png file")
    compare = out.with_name(out.stem + ".compare.png")
    sidecar = out.with_suffix(".json")
    inputs = {os.path.realpath(p): p for p in [args.image, args.weights] if p}
    for written in (out, compare, sidecar):
        given = inputs.get(os.path.realpath(written))
        if given is not None:
            what = "" if written == out else f" (with {written.name})"
            raise CliError(f"-o {out}: would overwrite the input {given}{what}; choose another "
                           "output name")
    machine = _setup(args, console)
    image = _load_image(args.image, console)
    H0, W0 = image.rgb.shape[:2]

    if kind == "caffenet":
        if min(H0, W0) < CAFFENET_MIN_SIDE:
            raise CliError(f"{args.image}: {H0}x{W0} pixels is too small for CaffeNet: it needs "
                           f"at least {CAFFENET_MIN_SIDE}x{CAFFENET_MIN_SIDE} (conv1's "
                           "receptive field)")
        net = _load_net(args, console)
        if image.grey:
            console.note(f"{args.image} is grey: replicated to three channels for CaffeNet")
        if (H0, W0) != (227, 227):
            console.note(f"{args.image}: {H0}x{W0} fitted to CaffeNet's 227x227 (resized, "
                         "aspect kept, centre-cropped)")
        original = deep.fit_image(image.rgb)
        rep = net.representation(layer)
        lam = args.lambda_tv if args.lambda_tv is not None else deep.paper_lambda_tv(net, layer)
        run = lambda cb: deep.invert_layer(net, original, deep.Job(layer, lam),  # noqa: E731
                                           callback=cb, **_optimiser_options(rep, args))
        desc = f"caffenet:{layer}"
    else:
        rep = make_representation(kind)
        pixels = image.rgb if args.color else image.gray
        if not args.color and not image.grey:
            console.note(f"{REP_TITLE[kind]} is inverted from the grey image, as in the "
                         "paper" + ("" if kind == "dsift" else " (--color inverts the colour "
                                                               "HOG)"))
        if args.size:
            original = fit(pixels, args.size)
            how = f"--size {args.size[0]}x{args.size[1]}"
        else:
            original = _resize_max_side(pixels, args.max_side)
            how = f"--max-side {args.max_side}; --max-side 0 keeps the full size"
        if original.shape[:2] != (H0, W0):
            console.note(f"{args.image}: resized from {H0}x{W0} to "
                         f"{original.shape[0]}x{original.shape[1]} ({how})")
        where = "" if original.shape[:2] == (H0, W0) else " (after resizing)"
        _check_shallow_size(args.image, kind, rep, original.shape, where)
        run = lambda cb: invert_image(kind, original, rep, device=args.device,  # noqa: E731
                                      lambda_tv=args.lambda_tv, callback=cb,
                                      **_optimiser_options(rep, args))
        desc = REP_TITLE[kind]
    _writable_folder(out.parent, f"-o {out}")  # before the inversion, not after it
    t_ready = time.perf_counter()
    try:
        with _InversionBar(console, desc, _iterations_of(rep, args.iterations), True) as bar:
            inv = run(bar.callback)
    except KeyboardInterrupt:
        print("invert-native: interrupted; nothing written (the inversion did not finish)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except InversionDiverged as exc:
        print(f"invert-native: error: {_diverged(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as exc:
        if "all zeros" in str(exc):
            raise CliError(f"{args.image}: its {desc} code is all zeros (a blank image?): there "
                           "is nothing to invert") from None
        raise
    t_done = time.perf_counter()
    res = inv.result
    best = int(np.argmin(res.objective[-1]))
    if kind == "caffenet":
        errors = inv.relative
    else:
        errors = res.feature_error
    caps = [""] + [f"#{k} {pct(e)}%" + (" best" if k == best else "")
                   for k, e in enumerate(errors)]
    record = {
        "command": "invert", "argv": list(args.argv), "created": now(), "machine": machine,
        "input": {"path": image.path, "size": [H0, W0], "grey": image.grey,
                  "inverted_size": list(original.shape[:2]),
                  "colour": bool(kind == "caffenet" or args.color)},
        "representation": ({"name": kind, "layer": layer, "weights": _weights_record(args, net),
                            "code_shape": list(rep.code_shape)} if kind == "caffenet" else
                           {"name": kind, "description": repr(rep)}),
        "settings": dict(res.options, device=args.device),
        "best_restart": best,
        "restarts": [{"restart": k, "error_relative": errors[k],
                      "objective": res.objective[-1][k], "data_term": res.data[-1][k],
                      "alpha_term": res.alpha_term[-1][k], "tv_term": res.tv_term[-1][k]}
                     for k in range(len(errors))],
        "error_definition": "error_relative = ||Phi(x*) - Phi(x0)|| / ||Phi(x0)||; the paper's "
                            "N_Phi normaliser needs an image set (invert-native evaluate)",
        "timings": {"setup_s": t_ready - t_start, "inversion_s": t_done - t_ready,
                    "per_iteration_ms": 1e3 * (t_done - t_ready) / res.options["iterations"]},
        "outputs": {"image": str(out), "compare": str(compare), "sidecar": str(sidecar)},
        "notes": console.notes, "warnings": console.warnings}
    title, text = weights_label(record["representation"].get("weights"))
    with deferred_interrupt():
        write_png(out, inv.reconstructions[best], text)
        write_png(compare, grid([[original] + list(inv.reconstructions)],
                                col_labels=["original"] + [f"restart {k}" for k in
                                                           range(len(errors))],
                                captions=[caps], title=title), text)
        record["timings"]["total_s"] = time.perf_counter() - t_start
        write_json(sidecar, record)
    if not args.quiet:
        print(f"{desc}: error {pct(errors[best])}% (||Phi(x*) - Phi0|| / ||Phi0||, best of "
              f"{len(errors)} restart(s)), {t_done - t_ready:.1f} s"
              + (f" [{title}]" if title else ""))
    print(f"wrote {out} ({compare.name}, {sidecar.name})")
    return 0


def _cmd_evaluate(args) -> int:
    from .experiments.shallow import fit

    console = _Console(args.quiet)
    reps = _shallow_reps(args.rep)
    if len(args.images) < 2:
        raise CliError("evaluate needs at least 2 images: the error is normalised by the mean "
                       "distance between the images' codes (N_Phi)")
    _check_distinct_files(args.images, _NEEDS_TWO)
    machine = _setup(args, console)
    images = _load_images(args.images, console)
    size = _common_size(images, args.size, args.max_side, console)
    resized = [im.name for im in images if im.rgb.shape[:2] != size]
    if resized:
        console.note(f"{len(resized)} image(s) brought to {size[0]}x{size[1]} (resized keeping "
                     "the aspect ratio to cover it, centre-cropped): " + ", ".join(resized))
    if any(not im.grey for im in images):
        console.note("colour images are inverted as grey (ITU-R 601 luma), as in the paper")
    items = [(im.name, fit(im.gray, size) if im.rgb.shape[:2] != size else im.gray)
             for im in images]
    section = _shallow_section(items, reps, args, console)
    out = _out_folder(args, "evaluate", _input_paths(args))
    settings = _settings(args, reps=reps, size=list(size),
                         images=_image_paths(images),
                         inputs_sha256=_inputs_digest(items))
    run = _start(args, out, "evaluate", machine, settings, console)
    if not args.quiet:
        print(f"writing to {out}/", file=sys.stderr)
    return _run_sweeps(run, args, [(section, _sweep_shallow, len(items) * len(reps))])


def _cmd_layers(args) -> int:
    from .experiments import deep

    console = _Console(args.quiet)
    # cheap checks first (--layers is checked by the parser): loading the weights takes seconds
    _check_weights_path(args)
    if args.window is not None and args.group is not None:
        raise CliError("--window and --group are separate experiments (Fig. 9 and Fig. 10): "
                       "give one of them")
    hint = " (one image gives the error ||Phi(x*) - Phi0|| / ||Phi0|| instead)"
    _check_distinct_files(args.images, _NEEDS_TWO + hint)
    machine = _setup(args, console)
    images = _load_images(args.images, console)
    for im in images:
        h, w = im.rgb.shape[:2]
        if min(h, w) < CAFFENET_MIN_SIDE:
            raise CliError(f"{im.path}: {h}x{w} pixels is too small for CaffeNet: it needs at "
                           f"least {CAFFENET_MIN_SIDE}x{CAFFENET_MIN_SIDE} (conv1's receptive "
                           "field)")
    items = [(im.name, deep.fit_image(im.rgb)) for im in images]
    if len(items) >= 2:
        _check_distinct_pixels(items, hint)
    net = _load_net(args, console)
    try:
        jobs = deep.plan(net, args.layers, args.lambda_tv, args.window, args.group)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not jobs:
        raise CliError("no layer to invert (the mask applies to none of the layers)")
    if any(im.rgb.shape[:2] != (227, 227) for im in images):
        console.note("images fitted to CaffeNet's 227x227 (resized keeping the aspect ratio, "
                     "centre-cropped)")
    scales = {}
    if len(items) >= 2:  # the paper's metric: N_Phi per layer, checked before any inversion
        scales = deep.layer_scales(net, [rgb for _, rgb in items], jobs)
        near = {}
        for (layer, _), (n_phi, norm) in scales.items():
            if _check_spread(n_phi, norm, f"{layer} codes", hint):
                near.setdefault(layer, 100 * n_phi / norm)
        if near:  # one warning for all the layers
            _warn_near_copies(console, f"codes at {', '.join(near)}",
                              f"{min(near.values()):.2g} to {max(near.values()):.2g} %")
        scales = {key: n_phi for key, (n_phi, _) in scales.items()}
    out = _out_folder(args, "layers", _input_paths(args))
    settings = _settings(args, layers=list(dict.fromkeys(j.layer for j in jobs)),
                         lambda_tv=args.lambda_tv or "paper (0.5 / 5 / 50 by layer)",
                         window=args.window, group=args.group,
                         images=_image_paths(images),
                         weights=_weights_setting(args), inputs_sha256=_inputs_digest(items))
    run = _start(args, out, "layers", machine, settings, console)
    section = DeepSection("layers", items, jobs, net, _weights_record(args, net), scales)
    if not args.quiet:
        print(f"writing to {out}/ ({len(jobs) * len(items)} inversions)", file=sys.stderr)
    return _run_sweeps(run, args, [(section, _sweep_deep, len(jobs) * len(items))])


def _cmd_demo(args) -> int:
    from .experiments import deep
    from .experiments.shallow import BUNDLED_PHOTOS, bundled_photos

    console = _Console(args.quiet)
    if args.photos:
        given = [v.strip().lower() for v in args.photos.split(",") if v.strip()]
        twice = [p for p in dict.fromkeys(given) if given.count(p) > 1]
        if twice:
            raise CliError(f"--photos: {', '.join(twice)} given twice: the same photo twice "
                           f"adds nothing, and {_NEEDS_TWO}")
    if args.quick:
        photos = _names(args.photos) if args.photos else list(QUICK_PHOTOS)
        size = args.size or QUICK_SIZE
        if args.iterations is None:
            args.iterations = QUICK_ITERATIONS
    else:
        photos = _names(args.photos) if args.photos else list(DEMO_PHOTOS)
        size = args.size or DEMO_SIZE
    for p in photos:
        if p not in BUNDLED_PHOTOS:
            raise CliError(f"unknown bundled photo {p!r}; choose from {', '.join(BUNDLED_PHOTOS)}")
    reps = _shallow_reps(args.rep)
    if args.layers and not (args.weights or args.random_weights):
        raise CliError("--layers picks the CaffeNet layers of the demo, which needs --weights "
                       "FILE (or --random-weights for an untrained net)")
    machine = _setup(args, console)
    net = _load_net(args, console) if (args.weights or args.random_weights) else None
    try:
        items = bundled_photos(photos, size=size)
    except ImportError:
        raise CliError("the demo's photos come from scikit-image: pip install scikit-image") \
            from None
    section = _shallow_section(items, reps, args, console)
    plans = [(section, _sweep_shallow, len(items) * len(reps))]
    deep_layers = args.layers or list(deep.DEMO_LAYERS)
    if net is not None:
        try:
            jobs = deep.plan(net, deep_layers)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        from skimage import data

        photo = deep.fit_image(data.astronaut().astype(np.float32))
        # its own name: the shallow part's "astronaut" is the grey photo at another size
        dsec = DeepSection("caffenet", [("astronaut-colour", photo)], jobs, net,
                            _weights_record(args, net))
        plans.append((dsec, _sweep_deep, len(jobs)))
    if args.docs:  # checked now: the figures are written only after the whole run
        _writable_folder(Path(args.docs), f"--docs {args.docs}")
    out = _out_folder(args, "demo", _input_paths(args))
    settings = _settings(args, photos=photos, size=list(size), reps=reps,
                         caffenet_layers=deep_layers if net is not None else None,
                         weights=_weights_setting(args) if net is not None else None,
                         inputs_sha256=_inputs_digest(*(sec.items for sec, _, _ in plans)))
    run = _start(args, out, "demo", machine, settings, console)
    if not args.quiet:
        print(f"writing to {out}/", file=sys.stderr)
    code = _run_sweeps(run, args, plans)
    if args.docs and code == 0:
        files = section.write_docs(Path(args.docs), run.folder.report)
        print(f"wrote {', '.join(str(f) for f in files)}")
    if net is None and code == 0:
        tip = ("CaffeNet layers (the paper's Fig. 6) were not inverted: no --weights. "
               + deep.WEIGHTS_HELP)
        if not args.quiet:
            print(tip, file=sys.stderr)
        run.console.notes.append(tip)
        run.refresh("complete")
    return code


def _settings(args, **extra) -> dict:
    s = {"restarts": args.restarts, "iterations": args.iterations or "paper schedule",
         "seed": args.seed,
         "lambda_tv": "paper" if getattr(args, "lambda_tv", None) is None else args.lambda_tv,
         "device": args.device}
    # only when given: the settings of a run without them, and so --resume of folders
    # written before these options existed, stay as they were
    for key in ("learning_rate", "lambda_alpha"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    s.update({k: v for k, v in extra.items()})
    return s


# ------------------------------------------------------------------ parser
def _common(p, *, out_file=False) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the inversion runs (default: cpu; cuda needs CuPy and a GPU)")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads of the native core (default: OMP_NUM_THREADS or all cores)")
    g.add_argument("--restarts", type=_positive_int, default=1,
                   help="reconstructions from different random starts, run as one batch "
                        "(default: 1; the best, by objective, is shown)")
    g.add_argument("--iterations", type=_positive_int, default=None,
                   help="iterations of gradient descent; the paper's schedule (800 for "
                        "HOG/DSIFT, 400 for CaffeNet) is shrunk or stretched to fit")
    g.add_argument("--seed", type=_seed, default=0,
                   help="seed of the random starts, 0 or more (default: 0)")
    g.add_argument("--learning-rate", type=_learning_rate, default=None, metavar="X",
                   help="first learning rate of the paper's schedule (default: 0.004); the "
                        "later steps keep their ratios (x0.1, x0.01, ...). Lower it if an "
                        "inversion diverges")
    g.add_argument("--lambda-alpha", type=_lambda, default=None, metavar="X",
                   help="weight of the alpha-norm prior (default: the paper's for the "
                        "representation and image size)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars or notes; warnings, errors and the output path only")
    g.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    if not out_file:
        g.add_argument("-o", "--out", default=None,
                       help="results folder (default: results/<command>-<date>-<time>)")
        g.add_argument("--force", action="store_true",
                       help="write into a --out folder that is not empty (a new run: "
                            "files of the same names are replaced; --resume goes on instead)")
        g.add_argument("--resume", action="store_true",
                       help="go on with the run in --out (after Ctrl-C or a crash): the "
                            "inversions it finished are read back, not redone; the command "
                            "and its settings must be the same (else exit 2 naming the one "
                            "that differs); an empty or new folder just runs")


def _weights_args(p) -> None:
    g = p.add_argument_group("CaffeNet weights")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="CaffeNet weights: the ONNX model zoo's bvlc_reference_caffenet "
                        "(caffenet-12.onnx) or an .npz in CaffeNet.save_npz's layout")
    g.add_argument("--random-weights", action="store_true",
                   help="use an UNTRAINED, randomly initialised CaffeNet instead (for trying "
                        "the command; results are labelled untrained)")


def _wrap(text: str) -> str:
    """A paragraph of --help text wrapped as argparse would (the Raw formatter keeps the
    examples' line breaks but wraps nothing itself)."""
    import shutil
    import textwrap

    width = min(shutil.get_terminal_size().columns, 100) - 2
    return textwrap.fill(" ".join(text.split()), width)


def _layer_names_help() -> str:
    from .representations.caffenet import CAFFENET_LAYERS

    return _wrap(f"CaffeNet layers: {', '.join(CAFFENET_LAYERS)}.")


DEMO_EXAMPLES = """\
examples:
  invert-native demo                  4 photos, HOG, HOGb, DSIFT (about 25 s on 2 cores)
  invert-native demo --quick          2 small photos, 200 iterations (a few seconds)
  invert-native demo --weights caffenet-12.onnx       ... and six CaffeNet layers (Fig. 6)
  invert-native demo --photos astronaut,camera,chelsea,coffee,rocket,coins,\
immunohistochemistry,motorcycle --docs docs
                                      the README's figure and Table 1 (docs/table1.png,
                                      docs/table1.md, docs/table1.json)

""" + EXIT_HELP

INVERT_EXAMPLES = """\
examples:
  invert-native invert photo.jpg --rep hogb -o photo-hogb.png
  invert-native invert photo.jpg --rep hog --color --restarts 4 -o photo-hog.png
  invert-native invert photo.jpg --rep caffenet:relu5 --weights caffenet-12.onnx -o r5.png
  invert-native invert photo.jpg --rep dsift --learning-rate 0.001 -o d.png  (if it diverged)

""" + EXIT_HELP

EVALUATE_EXAMPLES = """\
examples:
  invert-native evaluate a.jpg b.jpg c.jpg -o table1/
  invert-native evaluate photos/*.jpg --rep hogb --size 128x160 -o table1-hogb/
  invert-native evaluate photos/*.jpg -o table1/ --resume        (go on after Ctrl-C)

""" + EXIT_HELP

LAYERS_EXAMPLES = """\
examples:
  invert-native layers photo.jpg --weights caffenet-12.onnx              all 20 layers
  invert-native layers a.jpg b.jpg --weights caffenet-12.onnx --lambda-tv 0.5,5,50
                                                                 Table 3 / Fig. 8
  invert-native layers photo.jpg --weights caffenet-12.onnx --window 5   Fig. 9
  invert-native layers photo.jpg --weights caffenet-12.onnx --group 1    Fig. 10
  invert-native layers photo.jpg --random-weights --layers conv1,relu5 --iterations 50
                                                                 a try without weights

""" + EXIT_HELP


INFO_EXAMPLES = """\
examples:
  invert-native info                  the build and a smoke test
  OMP_NUM_THREADS=4 invert-native info

exit status: 0 the smoke test passed, 1 it failed (non-finite or misshapen gradient).
"""


def _add_commands(sub) -> None:
    from .experiments.deep import DEMO_LAYERS
    from .experiments.results import LAYOUT

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "demo", formatter_class=fmt, epilog=DEMO_EXAMPLES + "\n" + LAYOUT,
        help="invert HOG, HOGb and DSIFT codes of bundled photos (and CaffeNet layers with "
             "--weights); writes a figure and a report",
        description=_wrap(
            "The paper's Fig. 3 and Table 1 on photos shipped with scikit-image (no download): "
            "each photo's grey HOG, HOGb and DSIFT codes are inverted with the paper's "
            f"800-iteration schedule at {DEMO_SIZE[0]}x{DEMO_SIZE[1]} ({len(DEMO_PHOTOS)} "
            f"photos; --quick: {len(QUICK_PHOTOS)} photos at {QUICK_SIZE[0]}x{QUICK_SIZE[1]}, "
            f"{QUICK_ITERATIONS} iterations). With --weights, the astronaut photo is also "
            f"inverted from CaffeNet layers ({', '.join(DEMO_LAYERS)}; Fig. 6). --docs DIR "
            "also writes the figure and Table 1 as the README shows them."))
    p.add_argument("--quick", action="store_true",
                   help="a smaller, faster demo (a few seconds)")
    p.add_argument("--photos", default=None,
                   help="comma-separated scikit-image photos (astronaut, camera, chelsea, "
                        "coffee, rocket, coins, immunohistochemistry, motorcycle)")
    p.add_argument("--size", type=_parse_size, default=None, metavar="HxW",
                   help=f"size the photos are brought to (default {DEMO_SIZE[0]}x{DEMO_SIZE[1]})")
    p.add_argument("--rep", default="hog,hogb,dsift",
                   help="shallow representations (default: hog,hogb,dsift)")
    p.add_argument("--lambda-tv", type=_lambda, default=None, metavar="X",
                   help="lambda_V of the shallow inversions (default: the authors' 0.5)")
    p.add_argument("--layers", type=_layer_list, default=None,
                   help="CaffeNet layers with --weights (default: "
                        "conv1,norm2,relu3,relu5,relu6,fc8)")
    p.add_argument("--docs", default=None, metavar="DIR",
                   help="when the run completes, also write DIR/table1.png (the figure), "
                        "DIR/table1.md (Table 1 as the README shows it) and DIR/table1.json "
                        "(per-image errors): the README's results come from `--docs docs`")
    _weights_args(p)
    _common(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "invert", formatter_class=fmt,
        help="reconstruct one image from its code (HOG, HOGb, DSIFT or a CaffeNet layer)",
        description=_wrap(
            "Invert one image's code: writes OUT.png (the best restart), OUT.compare.png (the "
            "original beside every restart) and OUT.json (settings, errors per restart, "
            "timings)."),
        epilog=_wrap(
            "HOG, HOGb and DSIFT invert the grey image at its size (the paper's shallow "
            "experiments), downscaled to --max-side; --color inverts the colour HOG. CaffeNet "
            "takes the image fitted to 227x227 (aspect kept, centre crop) and needs --weights, "
            "or --random-weights for an untrained net (labelled so in the output and the "
            "sidecar). Grey, palette, 16-bit and RGBA images are converted (alpha composited "
            "over white), with a note.")
        + "\n\n" + _layer_names_help() + "\n\n" + INVERT_EXAMPLES)
    p.add_argument("image", help="the image (any format Pillow reads)")
    p.add_argument("--rep", required=True,
                   help="hog, hogb, dsift, or caffenet:LAYER (conv1 ... fc8)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.png",
                   help="the reconstruction (default: <image>-<rep>.png here)")
    p.add_argument("--lambda-tv", type=_lambda, default=None, metavar="X",
                   help="weight of the TV prior (default: the paper's: 0.5 for HOG/DSIFT as "
                        "in the authors' code; 0.5/5/50 by CaffeNet layer)")
    p.add_argument("--color", action="store_true",
                   help="HOG/HOGb: invert the colour image's code (default: grey, as the paper)")
    p.add_argument("--size", type=_parse_size, default=None, metavar="HxW",
                   help="HOG/DSIFT: bring the image to this size (resize, centre crop)")
    p.add_argument("--max-side", type=_max_side, default=256, metavar="N",
                   help="HOG/DSIFT: downscale larger images to this longest side (default 256; "
                        "0 keeps the full size)")
    _weights_args(p)
    _common(p, out_file=True)
    p.set_defaults(func=_cmd_invert)

    p = sub.add_parser(
        "evaluate", formatter_class=fmt, epilog=EVALUATE_EXAMPLES + "\n" + LAYOUT,
        help="the paper's Table 1 on your images: mean ± std error per representation",
        description=_wrap(
            "Invert every image's HOG / HOGb / DSIFT code and report the errors (paper's "
            "metric ||Phi(x*) - Phi(x0)|| / N_Phi and the authors' squared one) as Markdown, "
            "CSV and JSON, with a figure grid. Images are inverted in grey, all at one size "
            "(the metric compares codes of the set): --size HxW, or by default the smallest "
            "height x smallest width of the images, scaled down to --max-side; each image is "
            "resized keeping its aspect ratio to cover that size and centre-cropped. The images "
            "must differ: the metric divides by the mean distance between their codes."))
    p.add_argument("images", nargs="+", help="two or more images")
    p.add_argument("--rep", default="hog,hogb,dsift",
                   help="comma-separated: hog, hogb, dsift (default: all three)")
    p.add_argument("--size", type=_parse_size, default=None, metavar="HxW",
                   help="the common size (default: see above)")
    p.add_argument("--max-side", type=_max_side, default=256, metavar="N",
                   help="longest side of the default common size (default 256; 0: no limit)")
    p.add_argument("--lambda-tv", type=_lambda, default=None, metavar="X",
                   help="weight of the TV prior (default: the authors' 0.5)")
    _common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "layers", formatter_class=fmt,
        epilog=_layer_names_help() + "\n\n" + LAYERS_EXAMPLES + "\n" + LAYOUT,
        help="CaffeNet layer x lambda_V sweep (Table 3, Fig. 6/8), --window (Fig. 9), "
             "--group (Fig. 10)",
        description=_wrap(
            "Invert an image's code at CaffeNet layers: every layer (or --layers) x every "
            "--lambda-tv (default: the paper's value per layer), optionally with the loss "
            "restricted to the central --window N x N neurons (Fig. 9) or to one --group of "
            "channels (Fig. 10). With two or more images the table uses the paper's N_Phi "
            "metric, else ||Phi(x*) - Phi0|| / ||Phi0||. About 10-100 ms per iteration on a CPU "
            "core (400 iterations per inversion)."))
    p.add_argument("images", nargs="+", metavar="IMAGE", help="one or more images")
    p.add_argument("--layers", type=_layer_list, default=None,
                   help="comma-separated layers (default: all 20, conv1 ... fc8)")
    p.add_argument("--lambda-tv", type=_lambda_list, default=None, metavar="X[,Y...]",
                   help="lambda_V values, e.g. 0.5,5,50 (Table 3 / Fig. 8); default: the "
                        "paper's per layer")
    p.add_argument("--window", type=_positive_int, default=None, metavar="N",
                   help="loss on the central N x N neurons only (Fig. 9 uses 5)")
    p.add_argument("--group", type=int, choices=(1, 2), default=None,
                   help="loss on one of the two channel groups only (Fig. 10)")
    _weights_args(p)
    _common(p)
    p.set_defaults(func=_cmd_layers)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def _subparsers(parser) -> dict:
    """The commands' parsers by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _dispatch(parser, argv) -> int:
    """Parse, run, and turn every failure into one line and an exit status."""
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # a mistyped option: the command's own parser reports it, naming its --help
            command = _subparsers(parser).get(getattr(args, "command", None), parser)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = list(argv)
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("invert-native: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CliError as exc:
        if debug:
            raise
        print(f"invert-native: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if debug:
            raise
        print(f"invert-native: error: {type(exc).__name__}: {_one_line(exc)} (--debug shows "
              "the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """The console script: the exit status (0 done, 1 failed, 2 bad input, 130 Ctrl-C)."""
    args = list(sys.argv[1:] if argv is None else argv)
    import signal

    from . import _interrupted_while_starting

    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        # from here on a Ctrl-C is a KeyboardInterrupt that the commands handle
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _main(args)
    except KeyboardInterrupt:  # e.g. while the parser is built, before any command runs
        if "--debug" in args:
            raise
        print("invert-native: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    parser = _Parser(
        prog="invert-native",
        description=_wrap("Invert image representations (HOG, dense SIFT, CNN layers): find "
                          "images whose code matches a given image's (Mahendran & Vedaldi, "
                          "CVPR 2015). Start with `invert-native demo`."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXAMPLES + "\n" + LAYOUT)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("info", help="show the build (CPU threads, SGEMM kernel, CUDA status) "
                                    "and run a smoke test",
                       formatter_class=fmt, epilog=INFO_EXAMPLES,
                       description=_wrap(
                           "Print the package version, the CPU core's OpenMP threads and SGEMM "
                           "kernel, whether the CUDA core can be used (and why not), then run "
                           "CaffeNet's conv1 ... norm1 forward and backward on a 227x227 image "
                           "as a smoke test of the native core."))
    p.set_defaults(func=_info)
    from . import bench

    p = sub.add_parser("bench", help="benchmark against the same inversion in PyTorch "
                                     "(runs the source checkout's benchmarks/)",
                       formatter_class=fmt, description=_wrap(bench.DESCRIPTION),
                       epilog=bench.EPILOG)
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)
    _add_commands(sub)
    if not argv:  # a bare `invert-native`: the full help rather than one usage line
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
