"""The LSTM cell's pointwise work, forward and backward, in as few passes as its math allows.

Gates i, f, g, o in PyTorch's order, each H columns of a (B, 4H) pre-activation:
    c' = sigmoid(f) c + sigmoid(i) tanh(g),   h' = sigmoid(o) tanh(c').

numba has no vector exp or tanh (PyPI's llvmlite has no SVML): its scalar ones cost 3 ns
(exp) and 11 ns (tanh) an element in float32, numpy's SIMD ufuncs 0.5 and 0.4 (8,192
elements: B=32, H=64). So the forward leaves every exp and tanh to numpy and does the rest in
numba passes around them; the backward has no transcendental and is one pass. The sigmoid is
elementwise.py's, the same formula and order, so both are bit-identical to their references.
"""
import numpy as np
from numba import njit

from . import elementwise
from .elementwise import HALF, _into


# --- forward: (the four gate activations, (h', c') stacked, tanh(c')) from h W_hh^T, the
#     step's input product x W_ih^T, the bias b_ih + b_hh (or None) and the cell state c, the
#     pre-activation summed as the op-by-op step sums it: (x W_ih^T + h W_hh^T) + b. `act`:
#     where to write the activations (it may be xw itself: each element is read, then written)
def lstm_cell_ref(hh, xw, b, c, act=None):
    pre = xw + hh
    if b is not None:
        pre = pre + b
    n = c.shape[1]
    sigmoid = elementwise.sigmoid_ref
    act = _into(act, np.concatenate([sigmoid(pre[:, :2 * n]), np.tanh(pre[:, 2 * n:3 * n]), sigmoid(pre[:, 3 * n:])], 1))
    si, sf, tg, so = act[:, :n], act[:, n:2 * n], act[:, 2 * n:3 * n], act[:, 3 * n:]
    c_new = sf * c + si * tg
    tc = np.tanh(c_new)
    return act, np.stack([so * tc, c_new]), tc


def lstm_cell(hh, xw, b, c, act=None):
    if c.dtype is HALF:
        return lstm_cell_ref(hh, xw, b, c, act)
    n = c.shape[1]
    act = np.empty(hh.shape, hh.dtype) if act is None else act
    e = np.empty(hh.shape, hh.dtype)
    _preact(hh, xw, _NO_BIAS if b is None else b, act, e)
    np.exp(e, out=e)
    g = act[:, 2 * n:3 * n]
    np.tanh(g, out=g)
    hc = np.empty((2,) + c.shape, c.dtype)
    _cell_state(act, e, c, hc[1])
    tc = np.tanh(hc[1])
    _hidden(act, tc, hc[0])
    return act, hc, tc


# The passes loop over one gate's columns of one row at a time, through 1-D views: with
# offsets such as act[b, 3 * n + j] numba cannot rule out a negative index and LLVM leaves the
# loop scalar (the backward pass took 154 µs at H=1024 (B=32, float32), 57 µs written this
# way). A loop that divides needs error_model="numpy" to vectorise: numba's default checks
# every divisor for zero, to raise as Python would (the sigmoid: 28 -> 4 µs for 32,768
# elements, the same quotients; 1 + e is never zero here).
_NO_BIAS = np.empty(0, np.float32)  # numba takes "absent" as an empty array (any float type)


@njit(cache=True)
def _preact(hh, xw, bias, pre, e):
    """pre = (xw + hh) + bias (bias left out when empty), e = -|pre| (exp's argument for the
    sigmoids; unused in the g columns)."""
    for r in range(pre.shape[0]):
        hr, xr, pr, er = hh[r], xw[r], pre[r], e[r]
        if bias.shape[0]:
            for j in range(pr.shape[0]):
                v = (xr[j] + hr[j]) + bias[j]
                pr[j] = v
                er[j] = -abs(v)
        else:
            for j in range(pr.shape[0]):
                v = xr[j] + hr[j]
                pr[j] = v
                er[j] = -abs(v)


@njit(cache=True, error_model="numpy")
def _sigmoid_in_place(x, e):
    """x <- sigmoid(x) from e = exp(-|x|), as elementwise.sigmoid computes it."""
    one = x.dtype.type(1)
    for j in range(x.shape[0]):
        num = one if x[j] >= 0 else e[j]
        x[j] = num / (one + e[j])


@njit(cache=True)
def _cell_state(act, e, c, c_new):
    """The sigmoid gates (i, f, o) from pre (in act) and e = exp(-|pre|), in place; then
    c' = sf c + si tg."""
    n = c.shape[1]
    for b in range(act.shape[0]):
        ab, eb = act[b], e[b]
        _sigmoid_in_place(ab[:2 * n], eb[:2 * n])
        _sigmoid_in_place(ab[3 * n:], eb[3 * n:])
        si, sf, tg, cb, out = ab[:n], ab[n:2 * n], ab[2 * n:3 * n], c[b], c_new[b]
        for j in range(n):
            out[j] = sf[j] * cb[j] + si[j] * tg[j]


@njit(cache=True)
def _hidden(act, tc, h_new):
    n = tc.shape[1]
    for b in range(tc.shape[0]):
        so, tb, out = act[b, 3 * n:], tc[b], h_new[b]
        for j in range(n):
            out[j] = so[j] * tb[j]


# --- backward: (dL/dpre (B, 4H), dL/dc, into `d_c` if given) from dL/d(h', c') stacked
#     (2, B, H) and what forward kept
def lstm_cell_backward_ref(g, act, c, tc, d_c=None):
    n = c.shape[1]
    si, sf, tg, so = act[:, :n], act[:, n:2 * n], act[:, 2 * n:3 * n], act[:, 3 * n:]
    g_h, g_c = g[0], g[1]
    dc = g_c + g_h * so * (1 - tc * tc)  # through h' = so tanh(c')
    d_pre = np.concatenate([dc * tg * si * (1 - si), dc * c * sf * (1 - sf), dc * si * (1 - tg * tg),
                            g_h * tc * so * (1 - so)], 1)
    return d_pre, _into(d_c, dc * sf)


def lstm_cell_backward(g, act, c, tc, d_c=None):
    if c.dtype is HALF:
        return lstm_cell_backward_ref(g, act, c, tc, d_c)
    d_pre = np.empty(act.shape, act.dtype)
    d_c = np.empty(c.shape, c.dtype) if d_c is None else d_c
    _cell_backward(g, act, c, tc, d_pre, d_c)
    return d_pre, d_c


@njit(cache=True)
def _cell_backward(g, act, c, tc, d_pre, d_c):
    n = c.shape[1]
    one = act.dtype.type(1)
    for b in range(c.shape[0]):
        ab, db = act[b], d_pre[b]
        si, sf, tg, so = ab[:n], ab[n:2 * n], ab[2 * n:3 * n], ab[3 * n:]
        d_i, d_f, d_g, d_o = db[:n], db[n:2 * n], db[2 * n:3 * n], db[3 * n:]
        g_h, g_c, tb, cb, dcb = g[0, b], g[1, b], tc[b], c[b], d_c[b]
        for j in range(n):
            t = tb[j]
            dc = g_c[j] + g_h[j] * so[j] * (one - t * t)
            d_i[j] = dc * tg[j] * si[j] * (one - si[j])
            d_f[j] = dc * cb[j] * sf[j] * (one - sf[j])
            d_g[j] = dc * si[j] * (one - tg[j] * tg[j])
            d_o[j] = g_h[j] * t * so[j] * (one - so[j])
            dcb[j] = dc * sf[j]
