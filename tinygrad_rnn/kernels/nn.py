"""Softmax, log-softmax, fused cross-entropy and row gather/scatter, over 2-D (rows, n) arrays.

Rows are independent samples, the last axis the classes (the ops move `dim` there first).
Every kernel shifts by the row max before `exp`, so large logits never overflow.

Where an `exp` is needed the work is split three ways: numba finds each row's max and writes
`x - max` in one pass, numpy's SIMD `exp` runs in place, numba finishes each row (sum, log,
scale; the row helpers live in reduce.py). The kernels before this revision called numba's
scalar exp per element (PyPI's llvmlite has no SVML) and lost to the plain numpy references
by 1.7-2.9x at 2048x65 and 2048x1000. Every formula is the reference's, in the same order; only
row sums are reassociated (and `cross_entropy_backward`, which needs no exp, is bit-identical
to its reference).

Measured on the 2-core dev machine, float32 (median µs per call over 3 alternating fresh
inputs; this kernel / the numpy reference / the kernel before this revision):

    kernel                  32x65             2048x65           2048x1000
    softmax_lastdim         3.9 / 11.3 / 8.8   146 / 293 / 523   2016 / 3073 / 8149
    softmax_backward        1.0 / 6.1 / 2.6     28 / 130 / 125    691 / 2135 / 2085
    log_softmax_lastdim     4.0 / 13.1 / 9.1   142 / 329 / 549   2086 / 4157 / 8255
    log_softmax_backward    2.0 / 6.7 / 7.2     85 / 185 / 422   1467 / 2609 / 6589
    cross_entropy_forward   4.9 / 19.4 / 8.9   137 / 285 / 512   2035 / 2687 / 7905
    cross_entropy_backward  1.1 / 10.2 / 2.8    23 / 143 / 93     243 / 2686 / 2182

(cross_entropy_backward remeasured 2026-11-23, when it became one pass over the forward's
e = exp(x - max) and row sums instead of recomputing exp(x - lse); its reference changed the
same way. The column before it: `x - lse` as a numba pass, then numpy's exp.)

float64 is 1.3-2.8x slower than float32 and keeps the same order (e.g. softmax_lastdim
5.1 / 13.1 / 10.6, 265 / 408 / 666, 3868 / 5900 / 10659). `softmax_backward` has no exp: it
got faster (4.5x at 2048x65 float32) by summing in the input dtype with a reassociated,
vectorised dot instead of a serial float64 one.

Embedding, float32 (same columns): `gather_rows` with an explicit inner loop instead of a slice
copy, 43 / 61 / 150 µs for 2048 rows of a 65x256 table; `scatter_add_rows` unchanged, 47 µs
against np.add.at's 4444.
"""
import numpy as np
from numba import njit

from .elementwise import HALF
from .reduce import _row_dot, _row_sum, _sub_row_max


# --- softmax: y = exp(x - lse(x)); backward y * (g - sum(g * y))
def softmax_lastdim_ref(x):
    # initial=-inf: an empty row has max -inf, as in the kernel (numpy's max refuses it)
    e = np.exp(x - np.max(x, axis=1, keepdims=True, initial=-np.inf))
    return e / np.sum(e, axis=1, keepdims=True)


@njit(cache=True)
def _div_row_sum(e):
    for r in range(e.shape[0]):
        s = _row_sum(e[r])
        for j in range(e.shape[1]):
            e[r, j] /= s


def softmax_lastdim(x):
    if x.dtype is HALF:
        return softmax_lastdim_ref(x)
    out = np.empty(x.shape, x.dtype)
    _sub_row_max(x, out, False)
    np.exp(out, out=out)
    _div_row_sum(out)
    return out


def softmax_backward_ref(g, y):
    return y * (g - np.sum(g * y, axis=1, keepdims=True))


def softmax_backward(g, y):
    return softmax_backward_ref(g, y) if y.dtype is HALF else _softmax_backward(g, y)


@njit(cache=True)
def _softmax_backward(g, y):
    rows, n = y.shape
    out = np.empty((rows, n), dtype=y.dtype)
    for r in range(rows):
        dot = _row_dot(g[r], y[r])
        for j in range(n):
            out[r, j] = y[r, j] * (g[r, j] - dot)
    return out


# --- log-softmax: y = x - lse(x); backward g - softmax(x) * sum(g) = g - exp(y) * sum(g)
def log_softmax_lastdim_ref(x):
    m = np.max(x, axis=1, keepdims=True, initial=-np.inf)  # -inf for an empty row, as above
    with np.errstate(divide="ignore"):  # log(0) = -inf is the answer there, silently as in the kernel
        return x - m - np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))


@njit(cache=True)
def _sub_log_row_sum(out, e):
    for r in range(out.shape[0]):
        shift = np.log(_row_sum(e[r]))
        for j in range(out.shape[1]):
            out[r, j] -= shift


def log_softmax_lastdim(x):
    if x.dtype is HALF:
        return log_softmax_lastdim_ref(x)
    out = np.empty(x.shape, x.dtype)
    _sub_row_max(x, out, False)
    _sub_log_row_sum(out, np.exp(out))
    return out


def log_softmax_backward_ref(g, y):
    return g - np.exp(y) * np.sum(g, axis=1, keepdims=True)


@njit(cache=True)
def _log_softmax_backward(g, p):
    """p holds exp(y) on entry and the gradient on exit."""
    for r in range(p.shape[0]):
        s = _row_sum(g[r])
        for j in range(p.shape[1]):
            p[r, j] = g[r, j] - p[r, j] * s


def log_softmax_backward(g, y):
    if y.dtype is HALF:
        return log_softmax_backward_ref(g, y)
    p = np.exp(y)
    _log_softmax_backward(g, p)
    return p


# --- cross-entropy, fused: loss_r = lse(x_r) - x_r[t_r], where lse = m_r + log(s_r), e_r =
#     exp(x_r - m_r) with m_r the row max and s_r the sum of e_r; rows whose target is
#     ignore_index give 0. The forward returns e and s, which it computes anyway, and the
#     backward's softmax is then e / s: one pass instead of a second exp over every logit
#     (2048x65 float32: 93 -> 23 µs). The price is e, one (rows, classes) array, kept until
#     backward, as PyTorch's cross-entropy keeps its log-softmax.
def cross_entropy_forward_ref(x, targets, ignore_index):
    m = np.max(x, axis=1, keepdims=True)
    e = np.exp(x - m)
    s = np.sum(e, axis=1)
    lse = m[:, 0] + np.log(s)
    keep = targets != ignore_index
    safe = np.where(keep, targets, 0)
    picked = np.take_along_axis(x, safe[:, None], axis=1)[:, 0]
    return np.where(keep, lse - picked, 0).astype(x.dtype), e, s


@njit(cache=True)
def _cross_entropy_loss(x, e, m, targets, ignore_index):
    """e holds exp(x - m) row by row; returns the losses and the row sums of e."""
    rows = x.shape[0]
    loss = np.empty(rows, dtype=x.dtype)
    s = np.empty(rows, dtype=x.dtype)
    for r in range(rows):
        s[r] = _row_sum(e[r])
        t = targets[r]
        loss[r] = 0 if t == ignore_index else (m[r] + np.log(s[r])) - x[r, t]
    return loss, s


def cross_entropy_forward(x, targets, ignore_index):
    if x.dtype is HALF:
        return cross_entropy_forward_ref(x, targets, ignore_index)
    e = np.empty(x.shape, x.dtype)
    m = _sub_row_max(x, e, False)
    np.exp(e, out=e)
    loss, s = _cross_entropy_loss(x, e, m, targets, ignore_index)
    return loss, e, s


def cross_entropy_backward_ref(g, e, s, targets, ignore_index):
    keep = targets != ignore_index
    p = e / s[:, None]
    p[np.arange(len(targets))[keep], targets[keep]] -= 1
    return (p * np.where(keep, g, 0)[:, None]).astype(e.dtype)


def cross_entropy_backward(g, e, s, targets, ignore_index):
    if e.dtype is HALF:
        return cross_entropy_backward_ref(g, e, s, targets, ignore_index)
    return _cross_entropy_backward(g, e, s, targets, ignore_index)


@njit(cache=True)
def _cross_entropy_backward(g, e, s, targets, ignore_index):
    """(softmax - onehot(t)) * g per row, softmax = e / s; a new array (e stays as it was, for
    a second backward through a retained graph)."""
    rows, n = e.shape
    out = np.empty(e.shape, dtype=e.dtype)
    zero, one = e.dtype.type(0), e.dtype.type(1)  # a literal 1 would make numba compute in float64
    for r in range(rows):
        t = targets[r]
        if t == ignore_index:
            for j in range(n):
                out[r, j] = zero
            continue
        sr, gr = s[r], g[r]
        for j in range(n):
            out[r, j] = e[r, j] / sr * gr
        out[r, t] = (e[r, t] / sr - one) * gr  # (p - 1) * g, as the reference orders it
    return out


# --- embedding: gather rows; its backward scatter-adds (a row picked twice gets both grads)
def gather_rows_ref(w, idx):
    return w[idx]


def gather_rows(w, idx):
    return gather_rows_ref(w, idx) if w.dtype is HALF else _gather_rows(w, idx)


@njit(cache=True)
def _gather_rows(w, idx):
    d = w.shape[1]
    out = np.empty((idx.shape[0], d), dtype=w.dtype)
    # an explicit inner loop: the slice copy `out[i, :] = w[idx[i], :]` ran 3.5x slower
    for i in range(idx.shape[0]):
        row = idx[i]
        for j in range(d):
            out[i, j] = w[row, j]
    return out


def scatter_add_rows_ref(g, idx, num_rows):
    out = np.zeros((num_rows, g.shape[1]), dtype=g.dtype)
    np.add.at(out, idx, g)
    return out


def scatter_add_rows(g, idx, num_rows):
    return scatter_add_rows_ref(g, idx, num_rows) if g.dtype is HALF else _scatter_add_rows(g, idx, num_rows)


@njit(cache=True)
def _scatter_add_rows(g, idx, num_rows):
    out = np.zeros((num_rows, g.shape[1]), dtype=g.dtype)
    for i in range(idx.shape[0]):
        row = idx[i]
        for j in range(g.shape[1]):
            out[row, j] += g[i, j]
    return out
