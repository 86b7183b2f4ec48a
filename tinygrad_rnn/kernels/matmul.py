"""Matrix products: the fast path is BLAS, the loop kernels are for study and comparison.

Measured on the 2-core dev machine (benchmarks/overhead.py): OpenBLAS through `np.matmul`
runs 2-4x faster than the best of the numba loop kernels below at every shape the RNN uses
(32x256x256 up to 2048^3), so `matmul` is bound to BLAS on both backends. The loop kernels
show the three products backprop needs, written so numba vectorises the inner loop:

    forward   C  = A  @ B     (i, k, j) order: the inner loop walks a row of B and of C
    dA        dA = dC @ B^T   (i, j, k) order: a dot product of two contiguous rows
    dB        dB = A^T @ dC   (k, i, j) order: a rank-1 update per row of A
"""
import numpy as np
from numba import njit, prange


def matmul_ref(a, b):
    return np.matmul(a, b)


# BLAS wins by measurement; see the module docstring.
matmul = matmul_ref


def matmul_loop_ref(a, b):
    return a @ b


@njit(cache=True, parallel=True)
def matmul_loop(a, b):
    n, k = a.shape
    m = b.shape[1]
    out = np.zeros((n, m), dtype=a.dtype)
    for i in prange(n):
        for p in range(k):
            aip = a[i, p]
            for j in range(m):
                out[i, j] += aip * b[p, j]
    return out


def matmul_nt_loop_ref(g, b):
    return g @ b.T


@njit(cache=True, parallel=True)
def matmul_nt_loop(g, b):
    n, m = g.shape
    k = b.shape[0]
    out = np.empty((n, k), dtype=g.dtype)
    for i in prange(n):
        for p in range(k):
            acc = 0.0  # accumulates in float64 even for float32 inputs
            for j in range(m):
                acc += g[i, j] * b[p, j]
            out[i, p] = acc
    return out


def matmul_tn_loop_ref(a, g):
    return a.T @ g


@njit(cache=True, parallel=True)
def matmul_tn_loop(a, g):
    n, k = a.shape
    m = g.shape[1]
    out = np.zeros((k, m), dtype=a.dtype)
    # rows of `out` are independent, so split them across threads; each walks all of A
    for p in prange(k):
        for i in range(n):
            aip = a[i, p]
            for j in range(m):
                out[p, j] += aip * g[i, j]
    return out
