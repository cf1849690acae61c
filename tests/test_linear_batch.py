"""Fully connected layers at the batch sizes of restarts: each image's result is bit-identical
to computing it alone and to any thread count (the column blocks of the streamed products
must not change the order of any sum)."""
import numpy as np
import pytest

import invert_native as inv
from invert_native import ops


@pytest.mark.parametrize("N,I,O", [(8, 2000, 37), (5, 1237, 21), (16, 700, 9), (3, 4100, 6)])
def test_batch_rows_equal_single_images(N, I, O):
    rng = np.random.default_rng(N * 1000 + I)
    x = rng.standard_normal((N, I)).astype(np.float32)
    w = rng.standard_normal((O, I)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    dy = rng.standard_normal((N, O)).astype(np.float32)
    results = []
    for threads in (1, 2):
        inv.set_num_threads(threads)
        try:
            y = ops.linear_forward(x, w, b)
            dx = ops.linear_backward(dy, w, x.shape)
            for n in range(N):
                np.testing.assert_array_equal(y[n], ops.linear_forward(x[n:n + 1], w, b)[0])
                np.testing.assert_array_equal(dx[n], ops.linear_backward(dy[n:n + 1], w, (1, I))[0])
        finally:
            inv.set_num_threads(0)
        results.append((y, dx))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # and the values themselves, against float64
    np.testing.assert_allclose(results[0][0], x.astype(np.float64) @ w.T.astype(np.float64) + b,
                               rtol=1e-4, atol=1e-4 * np.abs(x).max() * np.abs(w).max() * np.sqrt(I))
    np.testing.assert_allclose(results[0][1], dy.astype(np.float64) @ w.astype(np.float64),
                               rtol=1e-4, atol=1e-4 * np.abs(dy).max() * np.abs(w).max() * np.sqrt(O))
