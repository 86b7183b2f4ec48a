"""Row-wise reductions over the last axis of a 2-D array, plus the row helpers nn.py shares.

The reduce ops move the reduced axes to the end and flatten them, so these kernels only ever
see `(rows, n)`. Sums and means are one numpy call (pairwise summation, SIMD) and need no kernel.

Measured on the 2-core dev machine (median µs per call over 3 alternating fresh inputs;
this kernel / the numpy reference / the kernel before this revision):

    kernel              dtype    32x65             2048x65           2048x1000
    logsumexp_lastdim   float32  4.3 / 12.5 / 10.5  132 / 264 / 659   1833 / 2415 / 9930
    logsumexp_lastdim   float64  5.7 / 14.2 / 10.7  201 / 342 / 650   3173 / 4476 / 9925
    max_lastdim         float32  3.3 / 6.2 / 2.7     53 / 57 / 180     264 / 270 / 1837
    max_lastdim         float64  3.2 / 5.8 / 2.7     41 / 64 / 203     499 / 505 / 1851

- `logsumexp_lastdim` splits the work three ways: numba finds each row's max and writes
  `x - max` in one pass, numpy's SIMD `exp` runs in place, numba sums each row and takes one
  log. The old all-numba kernel called numba's scalar exp per element (no SVML in PyPI's
  llvmlite) and lost to the numpy reference from 2048x65 up; now it wins at every size.
- `max_lastdim` is numpy's `argmax` (SIMD, first occurrence, first NaN wins) plus one gather.
  A numba loop cannot vectorise a max reduction without fastmath's "no NaNs", which would
  break the NaN rule: the old kernel was 3.4x (2048x65) to 7x (2048x1000) slower. It was
  0.6 µs faster at 32x65; that is the price.
- `_row_max` keeps eight running maxima (one is a chain of dependent compare-selects);
  `_row_sum`/`_row_dot` use fastmath "reassoc" only, so LLVM splits them over SIMD lanes.
- `parallel=True` halves `_sub_row_max` at 2048 rows when the machine is otherwise idle
  (27 vs 54 µs at 2048x65), but these kernels run between BLAS matmuls, and a numba parallel
  region right after an OpenBLAS call waits for BLAS's spinning threads (~8 ms per pair on
  this machine). They stay serial.
"""
import numpy as np
from numba import njit

from .elementwise import HALF


# --- helpers on one row (a 1-D view); nn.py builds softmax & co. from them
@njit(cache=True)
def _row_max(row):
    """Largest entry of a non-empty row. A NaN may be skipped: every caller then pushes that
    NaN through exp and a sum, so the row's result is NaN either way, as in numpy."""
    # eight independent running maxima: one running max is a chain of dependent
    # compare-selects; eight chains overlap. _sub_row_max on 2048x65 float32: 55 vs 75 µs;
    # at 2048x1000 the pass is memory-bound and both take ~760 µs
    n = row.shape[0]
    m = row[0]
    stop = n - n % 8
    if stop:
        m0, m1, m2, m3, m4, m5, m6, m7 = row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7]
        for j in range(8, stop, 8):
            m0 = max(m0, row[j])
            m1 = max(m1, row[j + 1])
            m2 = max(m2, row[j + 2])
            m3 = max(m3, row[j + 3])
            m4 = max(m4, row[j + 4])
            m5 = max(m5, row[j + 5])
            m6 = max(m6, row[j + 6])
            m7 = max(m7, row[j + 7])
        m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(stop, n):
        m = max(m, row[j])
    return m


@njit(cache=True, fastmath={"reassoc"})
def _row_sum(row):
    # reassoc lets LLVM split the sum over SIMD lanes; the reference (numpy's pairwise sum)
    # fixes no order either, so only the rounding differs
    s = row.dtype.type(0)
    for j in range(row.shape[0]):
        s += row[j]
    return s


@njit(cache=True, fastmath={"reassoc"})
def _row_dot(a, b):
    s = a.dtype.type(0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@njit(cache=True)
def _sub_row_max(x, out, finite_only):
    """out = x - max(row), row by row; returns the maxima. With `finite_only`, a max that is
    ±inf or NaN becomes 0 (logsumexp's rule: unshifted, exp and log then give the right
    inf/NaN). An empty row has max -inf."""
    rows, n = x.shape
    m = np.empty(rows, dtype=x.dtype)
    zero = x.dtype.type(0)
    for r in range(rows):
        mr = _row_max(x[r]) if n else x.dtype.type(-np.inf)
        if finite_only and not np.isfinite(mr):
            mr = zero
        m[r] = mr
        for j in range(n):
            out[r, j] = x[r, j] - mr
    return m


@njit(cache=True)
def _add_log_row_sum(m, e):
    """m[r] + log(sum(e[r])) for each row: the last step of a log-sum-exp."""
    out = np.empty(e.shape[0], dtype=e.dtype)
    for r in range(e.shape[0]):
        out[r] = m[r] + np.log(_row_sum(e[r]))
    return out


# --- column sums: a bias's gradient, the sum of dL/dy over the rows of a batch
def sum_rows_ref(x):
    return np.add.reduce(x, axis=0)


def sum_rows(x):
    return sum_rows_ref(x) if x.dtype is HALF else _sum_rows(x)


@njit(cache=True)
def _sum_rows(x):
    """x.sum(axis=0) of a 2-D array: zeros, then each row added in turn, the order numpy's
    axis-0 reduction takes too (bit-identical results, a column of -0.0 summing to +0.0
    included: tests/test_kernels.py). numpy pays a call of its inner loop per row: 45 µs at
    2048x65 float32, this 11; 1.2 and 0.6 µs at 32x64, a recurrent step's bias gradient."""
    rows, n = x.shape
    out = np.zeros(n, dtype=x.dtype)
    for r in range(rows):
        for j in range(n):
            out[j] += x[r, j]
    return out


# --- max with its argmax
def max_lastdim_ref(x):
    idx = np.argmax(x, axis=1)
    return np.take_along_axis(x, idx[:, None], axis=1)[:, 0], idx


def max_lastdim(x):
    """Largest value of each row and the index of its first occurrence (the tie rule)."""
    # numpy wins by measurement, see the module docstring
    idx = np.argmax(x, axis=1)
    return x[np.arange(x.shape[0]), idx], idx


# --- log-sum-exp, shifted by the row max so exp never overflows
def logsumexp_lastdim_ref(x):
    m = np.max(x, axis=1, keepdims=True, initial=-np.inf)  # an empty row: -inf, as the kernel
    m = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):  # an empty or all -inf row: log(0) = -inf, silently as the kernel
        return (m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True)))[:, 0]


def logsumexp_lastdim(x):
    """log(sum(exp(x))) per row; an empty row gives -inf."""
    if x.dtype is HALF:
        return logsumexp_lastdim_ref(x)
    e = np.empty(x.shape, x.dtype)
    m = _sub_row_max(x, e, True)
    np.exp(e, out=e)
    return _add_log_row_sum(m, e)
