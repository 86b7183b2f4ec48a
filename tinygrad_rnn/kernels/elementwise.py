"""Fused elementwise kernels (numba) with their numpy references.

An op that is one numpy ufunc (add, mul, exp, log, tanh, ...) calls numpy directly: there is
nothing to fuse and numpy is its own reference. numba's scalar `np.exp`/`np.tanh` are several
times slower than numpy's SIMD ones here (PyPI's llvmlite ships without SVML, see
shared/DESIGN.md), so these kernels fuse the cheap arithmetic around a transcendental and leave
the transcendental itself to a numpy ufunc writing in place.

Measured on the 2-core dev machine (median µs per call over 4 alternating fresh inputs;
this kernel / the numpy reference / the kernel before this revision):

    kernel            dtype    32x64            32x1024            256x1024
    tanh_backward     float32  1.5 / 2.1 / 1.6   5.8 / 12 / 9.6     41 / 84 / 66
    sigmoid_backward  float32  1.4 / 2.1 / 1.6   5.7 / 13 / 9.7     40 / 92 / 72
    relu_backward     float32  1.4 / 4.2 / 1.4   5.6 / 120 / 5.6    41 / 1001 / 41
    sigmoid           float32  4.4 / 9.4 / 8.2    46 / 160 / 230   371 / 1307 / 1986
    tanh_backward     float64  1.7 / 2.7 / 1.7    11 / 24 / 11     109 / 212 / 114
    sigmoid           float64  6.5 / 12 / 12      78 / 202 / 295   620 / 3394 / 2565

- The backward kernels now do float32 arithmetic in float32 (`out.dtype.type(1)`, not the
  literal `1`, which numba promotes to float64): 1.6-1.8x faster at 256x1024 float32, and
  bit-identical to the numpy references (float64 was already the same operations).
- `sigmoid` used to call numba's scalar exp inside an if/else per element: slower than the
  numpy reference from 32x256 up, and the branch on the sign mispredicts on real data. Now
  numpy computes exp(-|x|) in place and numba finishes with a branch-free select: the
  reference's formula, bit-identical results, 2-5x faster than before.
- `parallel=True` does not pay here: tanh_backward at 256x1024 is memory-bound (37 µs either
  way), at 32x256 the thread hand-off makes it slower (3.6 vs 2.1 µs), and after an OpenBLAS
  matmul a parallel kernel waits for BLAS's spinning threads: 8000 µs per (matmul, kernel)
  pair instead of 32 µs.

Kernels take arrays of any shape and layout: the wrappers flatten them (`reshape(-1)`: a view
for C-contiguous input, a copy otherwise) and write into a fresh C-contiguous output, or, for the
activation backwards, into a C-contiguous `out` the caller passes (a recurrent step's gradient
row, tinygrad_rnn/blocks.py). The one
exception, `add_row_into`, adds a row to every row of a 2-D array in place.
"""
import numpy as np
from numba import njit

# numba has no float16 type: each fast kernel hands float16 arrays to its numpy reference (see
# kernels/__init__.py). `is`: numpy's builtin dtypes are singletons, and `==` costs 0.1 µs more.
HALF = np.dtype(np.float16)


def _into(out, result):
    if out is None:
        return result
    out[...] = result
    return out


# --- tanh backward: dL/dx = g * (1 - y^2), from y = tanh(x), one pass, no temporaries
def tanh_backward_ref(g, y, out=None):
    return _into(out, g * (1 - y * y))


@njit(cache=True)
def _tanh_backward(g, y, out):
    one = out.dtype.type(1)
    for i in range(out.size):
        out[i] = g[i] * (one - y[i] * y[i])


def tanh_backward(g, y, out=None):
    if y.dtype is HALF:
        return tanh_backward_ref(g, y, out)
    out = np.empty(y.shape, y.dtype) if out is None else out
    _tanh_backward(g.reshape(-1), y.reshape(-1), out.reshape(-1))
    return out


# --- sigmoid, stable for large |x|: exp only ever sees -|x|, so it never overflows
def sigmoid_ref(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@njit(cache=True)
def _neg_abs(x, out):
    for i in range(out.size):
        out[i] = -abs(x[i])


@njit(cache=True, error_model="numpy")  # vectorises the division (gates.py says why): 28 -> 4 µs at 32,768
def _sigmoid_from_exp(x, e):
    one = e.dtype.type(1)
    # a select, not an if/else: random signs made the branchy version mispredict (~5 ns/element)
    for i in range(e.size):
        num = one if x[i] >= 0 else e[i]
        e[i] = num / (one + e[i])


def sigmoid(x):
    if x.dtype is HALF:
        return sigmoid_ref(x)
    out = np.empty(x.shape, x.dtype)
    xf, of = x.reshape(-1), out.reshape(-1)
    _neg_abs(xf, of)
    np.exp(of, out=of)
    _sigmoid_from_exp(xf, of)
    return out


# --- sigmoid backward: g * y * (1 - y)
def sigmoid_backward_ref(g, y, out=None):
    return _into(out, g * y * (1 - y))


@njit(cache=True)
def _sigmoid_backward(g, y, out):
    one = out.dtype.type(1)
    for i in range(out.size):
        out[i] = g[i] * y[i] * (one - y[i])


def sigmoid_backward(g, y, out=None):
    if y.dtype is HALF:
        return sigmoid_backward_ref(g, y, out)
    out = np.empty(y.shape, y.dtype) if out is None else out
    _sigmoid_backward(g.reshape(-1), y.reshape(-1), out.reshape(-1))
    return out


# --- relu backward: the gradient passes where the output is positive (0 at the kink)
def relu_backward_ref(g, y, out=None):
    return _into(out, np.where(y > 0, g, np.zeros((), g.dtype)))


@njit(cache=True)
def _relu_backward(g, y, out):
    zero = out.dtype.type(0)
    for i in range(out.size):
        out[i] = g[i] if y[i] > 0 else zero


def relu_backward(g, y, out=None):
    if g.dtype is HALF:
        return relu_backward_ref(g, y, out)
    out = np.empty(y.shape, g.dtype) if out is None else out
    _relu_backward(g.reshape(-1), y.reshape(-1), out.reshape(-1))
    return out


# --- a bias row added to every row of a matrix, in place: nn.Linear's `out += b`
def add_row_into_ref(out, row):
    out += row


def add_row_into(out, row):
    if out.dtype is HALF:
        return add_row_into_ref(out, row)
    _add_row_into(out, row)


@njit(cache=True)
def _add_row_into(out, row):
    # numpy's broadcast add runs its inner loop once per row, a call per 65 floats for a
    # char-RNN head: 29 -> 11 µs at 2048x65, 1.1 -> 0.4 at 32x64. One add per element either
    # way, so the same bits
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] += row[j]
