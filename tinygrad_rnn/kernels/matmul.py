"""Matrix products: the fast path is BLAS, the loop kernels are for study and comparison.

`matmul` is bound to numpy's BLAS on both backends: OpenBLAS is 1.4-3.9x faster than the loop
kernels below at the RNN's shapes (the one exception, the unsteady small A^T @ dC, is noted
below), and numba-parallel kernels mixed with BLAS in one training step would set off the
thread-pool fight described at the end. The loop kernels show the three products backprop needs, each
written so numba vectorises the innermost loop over contiguous memory:

    forward   C  = A  @ B     (i, k, j) order: the inner loop walks a row of B and of C
    dA        dA = dC @ B^T   (i, j, k) order: a dot product of two contiguous rows
    dB        dB = A^T @ dC   (k, i, j) order: a rank-1 update per row of A

Measured on the 2-core dev machine, float32 GFLOP/s, machine otherwise idle. Loop kernels:
alone in a process that never called BLAS (serial = the same code without parallel=True).
OpenBLAS: table (c) of benchmarks/overhead.py over three runs; at 32x256x256 it varies run to
run (A^T @ dC is the unsteady one, 27-115, where the loop kernel sometimes wins):

                     32x256x256       512^3            2048^3
    OpenBLAS         27-149           178-197          198-206
    matmul_loop      65 (serial 40)   63 (serial 33)   66 (serial 34)
    matmul_nt_loop   63 (serial 34)   72 (serial 36)   55 (serial 29)
    matmul_tn_loop   61 (serial 36)   76 (serial 37)   61 (serial 28)

- `matmul_nt_loop` was a float64-accumulated dot product; a float sum is a serial chain LLVM
  may not reorder, so it ran at 4.8-5.4 GFLOP/s (2.4 at 2048^3). With fastmath "reassoc" (and
  nothing else) and an accumulator of the inputs' dtype, as BLAS has, it vectorises: 12-23x.
- `matmul_loop` walks B in blocks of 64 rows so a block stays in L2 while every row of A
  passes: 66 vs 56 GFLOP/s at 2048^3, no change at the small shapes. A block written with
  `for j in range(j0, j1)` and `C[i, j]` does not vectorise (5 GFLOP/s): the inner loop here
  runs from 0 over row views.
- fastmath "contract" (FMA) changed nothing measurable: the (i, k, j) loops are bound by a
  load and a store of C per multiply-add, not by arithmetic.
- `parallel=True` pays 1.6-2.1x on the two idle cores (each thread owns whole output rows),
  so the study kernels keep it. Never interleave them with BLAS calls: OpenBLAS's and numba's
  worker threads spin after each call and starve each other, ~8000 µs per (BLAS matmul, loop
  kernel) pair at 32x256x256 against ~40 + ~100 µs apart (table (c') of the benchmark). For the
  same reason a parallel region stalls whenever another process keeps a core busy.
"""
import numpy as np
from numba import njit, prange

from . import blas, elementwise
from .elementwise import HALF, _into


def matmul_ref(a, b):
    return np.matmul(a, b)


# BLAS wins by measurement; see the module docstring.
def matmul(a, b):
    """np.matmul, except for the recurrent step's shape: a few rows times a transposed weight."""
    # the cheapest test first: most products (every one at H < 256) leave at the first
    if (b.ndim == 2 and b.shape[1] >= _SWAP_MIN_DIM and a.ndim == 2 and b.shape[0] >= _SWAP_MIN_DIM
            and _SWAP_ROWS[0] <= a.shape[0] <= _SWAP_ROWS[1]
            and a.dtype == np.float32 and b.dtype == np.float32
            and a.flags.c_contiguous and b.flags.f_contiguous and not b.flags.c_contiguous):
        # h @ W.T, as every RNN step and nn.Linear write it: this OpenBLAS packs the big
        # transposed W slowly, so compute (W @ h.T).T (W untransposed) and copy the thin result
        # back to C order. Same products and terms; the BLAS picks the order of the sums per
        # orientation, so the bits may differ: equal on the machine this was first measured on
        # (float32), differing by up to 7.2 u (|h| @ |W.T|) on an AMD Zen 3 with OpenBLAS's
        # Haswell kernels (tests/sum_order.py). float64 keeps numpy's orientation.
        return np.ascontiguousarray(np.matmul(b.T, a.T).T)
    return np.matmul(a, b)


# Where the swap measured faster (benchmarks/overhead.py, table (b'), two runs): 8 to 32 rows,
# both weight sides >= 256: 0.49-0.91x the time of the direct call. With 64+ rows or a weight
# side of 65-128 it was up to 2.3x slower (the transposing copy of the result dominates).
_SWAP_ROWS = (8, 32)
_SWAP_MIN_DIM = 256


def matmul_loop_ref(a, b):
    return a @ b


# rows of B per block: a 64-row block of B stays in L2 (512 KiB at 2048 float32 columns)
# while every row of A passes over it; +17% at 2048^3, no change at 32x256x256
_KBLOCK = 64


@njit(cache=True, parallel=True)
def matmul_loop(a, b):
    n, k = a.shape
    m = b.shape[1]
    out = np.zeros((n, m), dtype=a.dtype)
    for p0 in range(0, k, _KBLOCK):
        for i in prange(n):
            orow = out[i]
            for p in range(p0, min(p0 + _KBLOCK, k)):
                aip = a[i, p]
                brow = b[p]
                for j in range(m):
                    orow[j] += aip * brow[j]
    return out


def matmul_nt_loop_ref(g, b):
    return g @ b.T


# reassoc lets LLVM split the dot product over SIMD lanes: without it the sum is one
# serial chain of adds and the kernel ran at 2.4-5 GFLOP/s. It reorders the float sums only
# (BLAS fixes no order either); the accumulator has the inputs' dtype, as in BLAS.
@njit(cache=True, parallel=True, fastmath={"reassoc"})
def matmul_nt_loop(g, b):
    n, m = g.shape
    k = b.shape[0]
    out = np.empty((n, k), dtype=g.dtype)
    for i in prange(n):
        grow = g[i]
        for p in range(k):
            brow = b[p]
            acc = out.dtype.type(0)
            for j in range(m):
                acc += grow[j] * brow[j]
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


# --- an Elman step's pre-activation: x @ w_ih.T + h @ w_hh.T (+ (b_ih + b_hh))
def rnn_preact_ref(x, h, w_ih, w_hh, b_ih, b_hh, out=None):
    pre = (pick_columns_ref(w_ih, x) if x.dtype.kind in "iu" else np.matmul(x, w_ih.T)) + np.matmul(h, w_hh.T)
    return _into(out, pre if b_ih is None else pre + (b_ih + b_hh))


def rnn_preact(x, h, w_ih, w_hh, b_ih, b_hh, out=None):
    """x may also be token ids (B,), standing for one-hot rows: see `_preact_from_ids` below.
    `out`: a C-contiguous (B, H) array to write into (the step's row of its block) instead of
    a new one.

    The reference's sums on the transposed problem, pre.T = w_ih @ x.T + w_hh @ h.T: with a
    batch of at most `_PREACT_SWAP_ROWS` rows both products then read their weight untransposed
    (see `matmul` above), and only the finished sum is copied back to row order, once: 69.5 ->
    40.5 µs at B=32, H=256 and 569 -> 401 µs at H=1024 (char-RNN shapes, I=65). Same products
    and terms, summed in the order the BLAS picks for the transposed problem: bit-identical to
    the reference in a float32 sweep on the machine it was measured on, within a few units of
    rounding on others (tests/sum_order.py; tests/test_kernels.py checks a grid). float64 keeps
    the reference: float64 is for checking, not speed."""
    if h.dtype is HALF:
        return rnn_preact_ref(x, h, w_ih, w_hh, b_ih, b_hh, out)
    if x.dtype.kind in "iu":
        return _preact_from_ids(x, h, w_ih, w_hh, b_ih, b_hh, out)
    if not _preact_swaps(h, w_hh) or x.dtype != np.float32:
        return rnn_preact_ref(x, h, w_ih, w_hh, b_ih, b_hh, out)
    pre_t = np.matmul(w_ih, x.T)
    pre_t += np.matmul(w_hh, h.T)
    if b_ih is not None:
        pre_t += (b_ih + b_hh)[:, None]
    return np.ascontiguousarray(pre_t.T) if out is None else _into(out, pre_t.T)


_PREACT_SWAP_ROWS = 64


_F32 = np.dtype(np.float32)


def _preact_swaps(h, w_hh) -> bool:
    # `is`, not ==: numpy's builtin dtypes are singletons, and comparing a dtype with the
    # np.float32 type costs 0.1 µs each time step (an equal dtype that is not the singleton
    # just takes the reference's path, which the swap matches up to the order of its sums)
    return h.shape[0] <= _PREACT_SWAP_ROWS and h.dtype is _F32 and w_hh.dtype is _F32


# --- one-hot input given as token ids. one_hot(ids) @ w.T is exactly column ids[b] of w in row
# b (each entry is 1 * w[j, ids[b]] plus products with zero), so a gather replaces the product,
# and a scatter-add into columns replaces the weight gradient's d.T @ one_hot(ids). The results
# are the one-hot product's bit for bit while the weights are finite (tests/test_rnn.py); an
# inf or NaN weight differs: the product spreads 0 * inf = NaN over every row, the gather only
# to the rows that pick it, as an embedding lookup does.

def _id_error(ids, n: int) -> IndexError:
    bad = ids[(ids < 0) | (ids >= n)]
    return IndexError(f"token id {int(bad[0])} is out of range for {n} input features")


def _check_ids(ids, n: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise _id_error(ids, n)


def pick_columns_ref(w, ids):
    """one_hot(ids, w.shape[1]) @ w.T: (B, rows of w)."""
    _check_ids(ids, w.shape[1])
    return np.ascontiguousarray(w.T[ids])


def pick_columns(w, ids):
    if w.dtype is HALF:
        return pick_columns_ref(w, ids)
    out = np.empty((ids.shape[0], w.shape[0]), w.dtype)
    _pick_columns_into(out, None, w, ids, None, None)
    return out


def _pick_columns_into(out, hh, w, ids, b_ih, b_hh):
    """out = w.T[ids] (+ hh) (+ (b_ih + b_hh)); hh and the biases may be None. Raises naming a
    bad id."""
    if hh is None:  # numba takes "absent" as an empty array of the same type
        hh = np.empty((0, 0), w.dtype)
    if b_ih is None:
        b_ih = b_hh = np.empty(0, w.dtype)
    if _add_picked_columns(out, hh, w, ids, b_ih, b_hh) >= 0:
        raise _id_error(ids, w.shape[1])


@njit(cache=True)
def _add_picked_columns(out, hh, w, ids, b_ih, b_hh):
    """out[b] = (w[:, ids[b]] + hh[b]) + (b_ih + b_hh), the reference's order; an empty hh or
    bias is left out. Returns the first b whose id is outside [0, w.shape[1]), else -1, so the
    caller can name it (a numba exception cannot)."""
    n = w.shape[1]
    add_hh, add_bias = hh.shape[0] > 0, b_ih.shape[0] > 0
    for b in range(ids.shape[0]):
        k = ids[b]
        if k < 0 or k >= n:
            return b
        for j in range(out.shape[1]):
            v = w[j, k]
            if add_hh:
                v = v + hh[b, j]
            if add_bias:
                v = v + (b_ih[j] + b_hh[j])
            out[b, j] = v
    return -1


def _preact_from_ids(ids, h, w_ih, w_hh, b_ih, b_hh, out=None):
    """rnn_preact with the input product replaced by the column gather: h's product (transposed
    where that pays, as above), then one numba pass adds the picked columns and the biases and
    writes row order. Both in one kernel call where numpy's BLAS can be called from numba
    (kernels/blas.py); else the product is np.matmul's."""
    swap = _preact_swaps(h, w_hh)
    if out is None:
        out = np.empty((h.shape[0], w_hh.shape[0]), h.dtype)
    if blas.HAVE_GEMM and h.dtype in blas.GEMM_DTYPES and w_hh.dtype is h.dtype:
        if b_ih is None:
            b_ih = b_hh = np.empty(0, w_ih.dtype)
        bad = _gemm_add_picked_columns(out, h, w_hh, swap, w_ih, ids, b_ih, b_hh)
        if bad >= 0:
            raise _id_error(ids, w_ih.shape[1])
        if bad == -1:
            return out
    hh = np.matmul(w_hh, h.T).T if swap else np.matmul(h, w_hh.T)
    _pick_columns_into(out, hh, w_ih, ids, b_ih, b_hh)
    return out


_MISFIT = -2  # a kernel's answer when an operand is not one numpy would hand to gemm as is


@njit(cache=True)
def _gemm_add_picked_columns(out, h, w_hh, swap, w_ih, ids, b_ih, b_hh):
    """_add_picked_columns(out, h @ w_hh.T, ...) with the product as np.matmul computes it:
    np.matmul(w_hh, h.T).T when `swap`, else np.matmul(h, w_hh.T). _MISFIT, before doing
    anything, when numpy would not call gemm with these operands as they are (or would call
    syrk: the same array on both sides)."""
    batch, k = h.shape
    n = w_hh.shape[0]
    if not (blas.blasable(h) and blas.blasable(w_hh) and out.flags.c_contiguous and w_hh.shape[1] == k
            and out.shape == (batch, n) and ids.shape[0] == batch) or h.ctypes.data == w_hh.ctypes.data:
        return _MISFIT
    if swap:
        hh_t = np.empty((n, batch), h.dtype)
        blas.gemm(blas.NO_TRANS, blas.TRANS, n, batch, k, w_hh, k, h, k, hh_t, batch)
        return _add_picked_columns(out, hh_t.T, w_ih, ids, b_ih, b_hh)
    hh = np.empty((batch, n), h.dtype)
    blas.gemm(blas.NO_TRANS, blas.TRANS, batch, n, k, h, k, w_hh, k, hh, n)
    return _add_picked_columns(out, hh, w_ih, ids, b_ih, b_hh)


# --- an Elman step's backward through its activation and its recurrent product:
#     d_pre = (the activation's derivative at y) * g, then d_h = d_pre @ w_hh, the state's gradient
def activation_backward_matmul_ref(kind, g, y, w, out=None):
    d_pre = getattr(elementwise, kind + "_ref")(g, y, out)
    return d_pre, matmul_ref(d_pre, w)


def activation_backward_matmul(kind, g, y, w, out=None):
    """(d_pre, d_h); kind names the kernel giving d_pre: 'tanh_backward', 'sigmoid_backward' or
    'relu_backward'; `out`: a C-contiguous array to write d_pre into. One kernel call where
    numpy's BLAS can be called from numba (kernels/blas.py)."""
    d_pre = np.empty(y.shape, y.dtype) if out is None else out
    if blas.HAVE_GEMM and d_pre.dtype in blas.GEMM_DTYPES and w.dtype is d_pre.dtype and d_pre.ndim == 2:
        d_h = _activation_backward_gemm(_ACTIVATION_CODES[kind], g, y, d_pre, w)
        if d_h.shape[0]:
            return d_pre, d_h
    getattr(elementwise, kind)(g, y, d_pre)
    return d_pre, matmul(d_pre, w)


_ACTIVATION_CODES = {"tanh_backward": 0, "sigmoid_backward": 1, "relu_backward": 2}


@njit(cache=True)
def _activation_backward_gemm(code, g, y, d_pre, w):
    """The activation's backward kernel (by code) into d_pre, then np.matmul(d_pre, w) as numpy
    computes it. When numpy would not call gemm with these operands as they are: no rows,
    before anything is written."""
    batch, k = d_pre.shape
    n = w.shape[1]
    if not (blas.blasable(d_pre) and blas.blasable(w) and w.shape[0] == k and g.shape == d_pre.shape
            and y.shape == d_pre.shape):
        return np.empty((0, n), d_pre.dtype)
    # ravel: views of C-contiguous arrays (d_pre is one), a copy of another layout (g, y may be)
    g1, y1, d1 = g.ravel(), y.ravel(), d_pre.ravel()
    if code == 0:
        elementwise._tanh_backward(g1, y1, d1)
    elif code == 1:
        elementwise._sigmoid_backward(g1, y1, d1)
    else:
        elementwise._relu_backward(g1, y1, d1)
    d_h = np.empty((batch, n), d_pre.dtype)
    blas.gemm(blas.NO_TRANS, blas.NO_TRANS, batch, n, k, d_pre, k, w, n, d_h, n)
    return d_h


def scatter_add_rows_into_ref(out, idx, g):
    """out[idx[b]] += g[b], in place, a repeated index getting every row: with out = W.T this is
    W += g.T @ one_hot(idx), the weight gradient of the gather above."""
    np.add.at(out, idx, g)


def scatter_add_rows_into(out, idx, g):
    if out.dtype is HALF:
        return scatter_add_rows_into_ref(out, idx, g)
    _scatter_add_rows_into(out, idx, g)


@njit(cache=True)
def _scatter_add_rows_into(out, idx, g):
    # the engine hands W.T of a Fortran-ordered buffer, so both inner loops run along rows:
    # 3.0 µs at H=1024 where the same sum into a C-ordered W's columns took 37
    for b in range(idx.shape[0]):
        k = idx[b]
        for j in range(g.shape[1]):
            out[k, j] += g[b, j]
