"""Softmax, log-softmax, fused cross-entropy and row gather/scatter, over C-contiguous 2-D arrays.

Rows are independent samples, the last axis the classes (the ops move `dim` there first).
Every kernel shifts by the row max before `exp`, so large logits never overflow.
"""
import numpy as np
from numba import njit


# --- softmax: y = exp(x - lse(x)); backward y * (g - sum(g * y))
def softmax_lastdim_ref(x):
    e = np.exp(x - np.max(x, axis=1, keepdims=True))
    return e / np.sum(e, axis=1, keepdims=True)


@njit(cache=True)
def softmax_lastdim(x):
    rows, n = x.shape
    out = np.empty_like(x)
    for r in range(rows):
        m = x[r, 0]
        for j in range(1, n):
            m = max(m, x[r, j])
        s = 0.0
        for j in range(n):
            e = np.exp(x[r, j] - m)
            out[r, j] = e
            s += e
        inv = 1.0 / s
        for j in range(n):
            out[r, j] *= inv
    return out


def softmax_backward_ref(g, y):
    return y * (g - np.sum(g * y, axis=1, keepdims=True))


@njit(cache=True)
def softmax_backward(g, y):
    rows, n = y.shape
    out = np.empty_like(y)
    for r in range(rows):
        dot = 0.0
        for j in range(n):
            dot += g[r, j] * y[r, j]
        for j in range(n):
            out[r, j] = y[r, j] * (g[r, j] - dot)
    return out


# --- log-softmax: y = x - lse(x); backward g - softmax(x) * sum(g) = g - exp(y) * sum(g)
def log_softmax_lastdim_ref(x):
    m = np.max(x, axis=1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))


@njit(cache=True)
def log_softmax_lastdim(x):
    rows, n = x.shape
    out = np.empty_like(x)
    for r in range(rows):
        m = x[r, 0]
        for j in range(1, n):
            m = max(m, x[r, j])
        s = 0.0
        for j in range(n):
            s += np.exp(x[r, j] - m)
        shift = m + np.log(s)
        for j in range(n):
            out[r, j] = x[r, j] - shift
    return out


def log_softmax_backward_ref(g, y):
    return g - np.exp(y) * np.sum(g, axis=1, keepdims=True)


@njit(cache=True)
def log_softmax_backward(g, y):
    rows, n = y.shape
    out = np.empty_like(y)
    for r in range(rows):
        s = 0.0
        for j in range(n):
            s += g[r, j]
        for j in range(n):
            out[r, j] = g[r, j] - np.exp(y[r, j]) * s
    return out


# --- cross-entropy, fused: loss_r = lse(x_r) - x_r[t_r]; rows whose target is ignore_index
#     give 0. The forward keeps only lse (one number per row); the backward recomputes
#     softmax from it, so no (rows, classes) probability array has to be stored.
def cross_entropy_forward_ref(x, targets, ignore_index):
    m = np.max(x, axis=1, keepdims=True)
    lse = (m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True)))[:, 0]
    keep = targets != ignore_index
    safe = np.where(keep, targets, 0)
    picked = np.take_along_axis(x, safe[:, None], axis=1)[:, 0]
    return np.where(keep, lse - picked, 0).astype(x.dtype), lse


@njit(cache=True)
def cross_entropy_forward(x, targets, ignore_index):
    rows, n = x.shape
    loss = np.empty(rows, dtype=x.dtype)
    lse = np.empty(rows, dtype=x.dtype)
    for r in range(rows):
        m = x[r, 0]
        for j in range(1, n):
            m = max(m, x[r, j])
        s = 0.0
        for j in range(n):
            s += np.exp(x[r, j] - m)
        lse[r] = m + np.log(s)
        t = targets[r]
        loss[r] = 0 if t == ignore_index else lse[r] - x[r, t]
    return loss, lse


def cross_entropy_backward_ref(g, x, lse, targets, ignore_index):
    keep = targets != ignore_index
    p = np.exp(x - lse[:, None])
    p[np.arange(len(targets))[keep], targets[keep]] -= 1
    return (p * np.where(keep, g, 0)[:, None]).astype(x.dtype)


@njit(cache=True)
def cross_entropy_backward(g, x, lse, targets, ignore_index):
    rows, n = x.shape
    out = np.empty_like(x)
    for r in range(rows):
        t = targets[r]
        if t == ignore_index:
            out[r, :] = 0
            continue
        gr = g[r]
        for j in range(n):
            out[r, j] = gr * np.exp(x[r, j] - lse[r])
        out[r, t] -= gr
    return out


# --- embedding: gather rows; its backward scatter-adds (a row picked twice gets both grads)
def gather_rows_ref(w, idx):
    return w[idx]


@njit(cache=True)
def gather_rows(w, idx):
    out = np.empty((idx.shape[0], w.shape[1]), dtype=w.dtype)
    for i in range(idx.shape[0]):
        out[i, :] = w[idx[i], :]
    return out


def scatter_add_rows_ref(g, idx, num_rows):
    out = np.zeros((num_rows, g.shape[1]), dtype=g.dtype)
    np.add.at(out, idx, g)
    return out


@njit(cache=True)
def scatter_add_rows(g, idx, num_rows):
    out = np.zeros((num_rows, g.shape[1]), dtype=g.dtype)
    for i in range(idx.shape[0]):
        row = idx[i]
        for j in range(g.shape[1]):
            out[row, j] += g[i, j]
    return out
