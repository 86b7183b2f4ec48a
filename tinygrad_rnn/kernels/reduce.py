"""Row-wise reductions over the last axis of a C-contiguous 2-D array.

The reduce ops move the reduced axes to the end and flatten them, so these kernels only ever
see `(rows, n)`. Sums and means are one numpy call (pairwise summation, SIMD) and need no kernel;
the kernels here fuse what numpy does in several passes: max with its argmax, and logsumexp.
"""
import numpy as np
from numba import njit


def max_lastdim_ref(x):
    idx = np.argmax(x, axis=1)
    return np.take_along_axis(x, idx[:, None], axis=1)[:, 0], idx


@njit(cache=True)
def max_lastdim(x):
    """Largest value of each row and the index of its first occurrence (the tie rule)."""
    rows, n = x.shape
    vals = np.empty(rows, dtype=x.dtype)
    idx = np.empty(rows, dtype=np.int64)
    for r in range(rows):
        best = x[r, 0]
        arg = 0
        for j in range(1, n):
            v = x[r, j]
            # the first NaN wins, as in numpy's argmax
            if v > best or (v != v and best == best):
                best = v
                arg = j
        vals[r] = best
        idx[r] = arg
    return vals, idx


def logsumexp_lastdim_ref(x):
    m = np.max(x, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return (m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True)))[:, 0]


@njit(cache=True)
def logsumexp_lastdim(x):
    """log(sum(exp(x))) per row, shifted by the row max so exp never overflows."""
    rows, n = x.shape
    out = np.empty(rows, dtype=x.dtype)
    for r in range(rows):
        m = x[r, 0]
        for j in range(1, n):
            if x[r, j] > m:
                m = x[r, j]
        if not np.isfinite(m):
            m = 0.0  # all -inf, or an inf/NaN present: no shift, exp/log give the right inf/NaN
        s = 0.0
        for j in range(n):
            s += np.exp(x[r, j] - m)
        out[r] = m + np.log(s)
    return out
