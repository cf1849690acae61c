"""The type stubs of the native modules (_cpu.pyi, _cuda.pyi) match the modules, and ship.

Every public function of a module has a stub with as many parameters as the
binding takes, under the binding's own names where it declares them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import pathlib
import re

import pytest

import invert_native
from invert_native import _cpu

ROOT = pathlib.Path(__file__).resolve().parent.parent


def stub_functions(module_name: str) -> dict[str, list[str]]:
    """{function: [parameter names]} of the installed package's <module>.pyi."""
    text = (importlib.resources.files("invert_native") / f"{module_name}.pyi").read_text()
    tree = ast.parse(text)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            out[node.name] = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    return out


def _split_top_level(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def binding_parameters(fn) -> list[str]:
    """Parameter names of a pybind11 function, from the signature line of its docstring."""
    first = fn.__doc__.strip().splitlines()[0]
    inner = first[first.index("(") + 1:first.rindex(") ->")]
    return [p.split(":")[0].strip() for p in _split_top_level(inner)]


def public_functions(module) -> dict:
    return {n: getattr(module, n) for n in dir(module)
            if not n.startswith("_") and callable(getattr(module, n))}


def check_against_module(module, stubs):
    functions = public_functions(module)
    assert sorted(set(functions) - set(stubs)) == [], "bound but missing from the stub"
    assert sorted(set(stubs) - set(functions)) == [], "in the stub but not bound"
    for name, fn in functions.items():
        bound = binding_parameters(fn)
        assert len(stubs[name]) == len(bound), f"{name}: stub {stubs[name]} vs binding {bound}"
        if not any(re.fullmatch(r"arg\d+", p) for p in bound):  # names declared with py::arg
            assert stubs[name] == bound, f"{name}: stub {stubs[name]} vs binding {bound}"


def test_cpu_stub_lists_every_function_with_its_parameters():
    check_against_module(_cpu, stub_functions("_cpu"))


def test_the_check_can_fail():
    stubs = stub_functions("_cpu")
    del stubs["conv2d_forward"]
    with pytest.raises(AssertionError, match="missing from the stub"):
        check_against_module(_cpu, stubs)
    stubs = stub_functions("_cpu")
    stubs["relu_forward"] = ["x", "out"]
    with pytest.raises(AssertionError, match="relu_forward"):
        check_against_module(_cpu, stubs)


def test_cuda_stub_lists_every_function():
    stubs = stub_functions("_cuda")
    try:
        cuda = importlib.import_module("invert_native._cuda")
    except ImportError:
        cuda = None
    if cuda is not None:
        check_against_module(cuda, stubs)
        return
    # No CUDA core in this install: the bound names, from the binding sources
    sources = sorted((ROOT / "src").glob("bind_cuda*.cpp"))
    if not sources:
        pytest.skip("neither the _cuda module nor its binding sources are here")
    bound = set()
    for src in sources:
        bound |= set(re.findall(r'm\.def\(\s*"(\w+)"', src.read_text()))
    assert bound == set(stubs)


def test_stubs_and_py_typed_ship_with_the_package():
    pkg = importlib.resources.files("invert_native")
    for name in ("_cpu.pyi", "_cuda.pyi", "py.typed"):
        assert (pkg / name).is_file(), f"{name} is not installed next to {invert_native.__file__}"
