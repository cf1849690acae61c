"""The fully connected kernels in both instruction sets: AVX-512 where the CPU has it, AVX2
when it lacks it or INVERT_NATIVE_NO_AVX512=1 forces it (a fresh process, since the choice
is made once). Both against float64 NumPy; backward bit-identical between them (its sums
have no lane reductions), forward within float32 rounding."""
import json

import numpy as np
from conftest import run_python

SCRIPT = r"""
import json, sys
import numpy as np
from invert_native import ops, _cpu
out = {"kernel": _cpu.sgemm_kernel()}
for N, I, O in ((1, 9216, 64), (3, 1500, 37), (8, 9216, 40), (8, 4096, 33), (16, 700, 9)):
    rng = np.random.default_rng(N * 7 + I)
    x = rng.standard_normal((N, I)).astype(np.float32)
    w = rng.standard_normal((O, I)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    dy = rng.standard_normal((N, O)).astype(np.float32)
    dy[:, ::3] = 0
    y = ops.linear_forward(x, w, b)
    dx = ops.linear_backward(dy, w, x.shape)
    out[f"{N},{I},{O}"] = [y.tolist(), dx.tolist()]
json.dump(out, sys.stdout)
"""


def run(no_avx512):
    env = {"INVERT_NATIVE_NO_AVX512": "1" if no_avx512 else None}
    return json.loads(run_python(SCRIPT, env=env))


def test_avx2_and_avx512_kernels_agree_with_numpy():
    wide, narrow = run(False), run(True)
    assert narrow["kernel"].startswith("avx2")
    for key in (k for k in wide if k != "kernel"):
        N, I, O = map(int, key.split(","))
        rng = np.random.default_rng(N * 7 + I)
        x = rng.standard_normal((N, I)).astype(np.float32).astype(np.float64)
        w = rng.standard_normal((O, I)).astype(np.float32).astype(np.float64)
        b = rng.standard_normal(O).astype(np.float32).astype(np.float64)
        dy = rng.standard_normal((N, O)).astype(np.float32)
        dy[:, ::3] = 0
        y_ref, dx_ref = x @ w.T + b, dy.astype(np.float64) @ w
        for got in (wide[key], narrow[key]):
            y, dx = np.array(got[0]), np.array(got[1])
            np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-5 * np.sqrt(I) * 4)
            np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-5 * np.sqrt(O) * 4)
        np.testing.assert_array_equal(np.array(wide[key][1]), np.array(narrow[key][1]))
