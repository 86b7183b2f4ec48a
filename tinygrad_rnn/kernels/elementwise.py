"""Fused elementwise kernels (numba) with their numpy references.

An op that is one numpy ufunc (add, mul, exp, log, tanh, ...) calls numpy directly: there is
nothing to fuse and numpy is its own reference. numba's `np.tanh`/`np.exp` are several times
slower than numpy's here (PyPI's llvmlite ships without SVML, see shared/DESIGN.md), so the
kernels below fuse the cheap arithmetic around a transcendental, not the transcendental itself.
Kernels take arrays of any shape: the wrappers flatten them (a view for C-contiguous input).
"""
import numpy as np
from numba import njit


def _flat(a):
    return a.reshape(-1)


# --- tanh backward: dL/dx = g * (1 - y^2), from y = tanh(x), one pass, no temporaries
def tanh_backward_ref(g, y):
    return g * (1 - y * y)


@njit(cache=True)
def _tanh_backward(g, y, out):
    for i in range(out.size):
        out[i] = g[i] * (1 - y[i] * y[i])


def tanh_backward(g, y):
    out = np.empty(y.shape, y.dtype)
    _tanh_backward(_flat(g), _flat(y), _flat(out))
    return out


# --- sigmoid, stable for large |x|: exp only ever sees -|x|, so it never overflows
def sigmoid_ref(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@njit(cache=True)
def _sigmoid(x, out):
    for i in range(out.size):
        v = x[i]
        if v >= 0:
            out[i] = 1 / (1 + np.exp(-v))
        else:
            e = np.exp(v)
            out[i] = e / (1 + e)


def sigmoid(x):
    out = np.empty(x.shape, x.dtype)
    _sigmoid(_flat(x), _flat(out))
    return out


# --- sigmoid backward: g * y * (1 - y)
def sigmoid_backward_ref(g, y):
    return g * y * (1 - y)


@njit(cache=True)
def _sigmoid_backward(g, y, out):
    for i in range(out.size):
        out[i] = g[i] * y[i] * (1 - y[i])


def sigmoid_backward(g, y):
    out = np.empty(y.shape, y.dtype)
    _sigmoid_backward(_flat(g), _flat(y), _flat(out))
    return out


# --- relu backward: the gradient passes where the output is positive (0 at the kink)
def relu_backward_ref(g, y):
    return np.where(y > 0, g, np.zeros((), g.dtype))


@njit(cache=True)
def _relu_backward(g, y, out):
    for i in range(out.size):
        out[i] = g[i] if y[i] > 0 else 0


def relu_backward(g, y):
    out = np.empty(y.shape, g.dtype)
    _relu_backward(_flat(g), _flat(y), _flat(out))
    return out
