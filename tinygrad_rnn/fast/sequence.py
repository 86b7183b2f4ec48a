"""The LSTM over a whole sequence, as PyTorch's fused layer splits the work: the input
projection of all T steps as one node, then one node per time step for what depends on h.

    P = x W_ih^T                              `Projection`: one GEMM (or a gather of W_ih's
                                              columns, for token ids) over all T*B rows
    (h_t, c_t) = cell(P[t] + h_{t-1} W_hh^T   `LSTMStep`, T times: one GEMM, then the gates
                      + (b_ih + b_hh))        in a few passes (kernels/gates.py)
    output = [h_0, ..., h_{T-1}]              `HiddenStates`: the h's as one (T, B, H) array

BPTT still emerges from the graph the loop over time records: each step's backward sends
P row t of its dL/dpre, and the previous step's (h, c), W_hh and the bias their shares, which
the engine sums; Projection's backward then turns dL/dP into W_ih's gradient with one GEMM (or
scatter) for the whole sequence. The forward is the op-by-op step's arithmetic
(nn.rnn._lstm_step) in its order, so its values are the plain path's bit for bit; gradients
are the same sums in another order (tests/test_rnn.py, tests/test_plain_equals_fast.py).

Measured against the LSTMCellStep loop it replaces (benchmarks/gated_step.py, V=65, B=32,
T=64, tokens/s as a ratio to PyTorch's fused nn.LSTM, one-hot rows, two runs): 0.41 ->
0.66-0.73x at H=64, 0.56 -> 0.63-0.69x at H=256, 0.71 -> 0.73-0.76x at H=1024, 0.54 ->
0.64-0.70x with 2 layers at H=256 (docs/fast.md).
"""
from __future__ import annotations

import numpy as np

from .._args import is_token_ids
from ..autograd import Function, ShapeError, check_same_dtype
from ..functional import stack
from ..kernels import K
from .lazy import OuterGrad, RowSumGrad, SliceGrad, columns
from .steps import _shape


class Projection(Function):
    """x W^T for x (T, B, I), or token ids (T, B) standing for one-hot rows: (T, B, G)."""

    def forward(self, x, w):
        ids = is_token_ids(x)
        check_same_dtype("lstm", None if ids else x, w)
        if ids:
            if x.size and (x.min() < 0 or x.max() >= w.shape[1]):
                bad = x[(x < 0) | (x >= w.shape[1])][0]
                raise IndexError(f"token id {bad} is out of range for {w.shape[1]} input features")
            out = K.gather_rows(np.ascontiguousarray(w.T), x.reshape(-1))  # one-hot rows pick rows of W^T
        else:
            out = K.matmul(x.reshape(-1, x.shape[-1]), w.T)
        self.saved = (x, w)
        return out.reshape(x.shape[:2] + (w.shape[0],))

    def backward(self, g):
        x, w = self.saved
        need_x, need_w = self.needs_input_grad
        rows = g.reshape(-1, g.shape[-1])
        if is_token_ids(x):
            return None, columns(w.shape, x.reshape(-1), rows) if need_w else None
        return (K.matmul(g, w) if need_x else None,
                K.matmul(rows.T, x.reshape(-1, x.shape[-1])) if need_w else None)


class LSTMStep(Function):
    """Step t of the layer: from the projection P (T, B, 4H) and the previous (h, c) stacked
    (2, B, H), the new (h, c) stacked. Row t of P is the step's own: it becomes the gates'
    activations in place (backward needs those, and nothing else needs P's values), so the
    sequence keeps one (B, 4H) array per step, not two. `w_hh_t` is W_hh^T as the product
    reads it fastest (see lstm_sequence)."""

    def forward(self, p, hc, w_hh, b, t, w_hh_t):
        h, c = hc[0], hc[1]
        act, out, tc = K.lstm_cell(K.matmul(h, w_hh_t), p[t], b, c, act=p[t])
        self.saved = (p.shape, t, h, c, w_hh, act, tc)
        return out

    def backward(self, g):
        shape, t, h, c, w_hh, act, tc = self.saved
        need_p, _, need_w_hh, need_b = self.needs_input_grad[:4]
        d_hc = np.empty((2,) + h.shape, h.dtype)
        d_pre, _ = K.lstm_cell_backward(g, act, c, tc, d_c=d_hc[1])
        np.matmul(d_pre, w_hh, out=d_hc[0])
        return (SliceGrad(shape, d_pre.dtype, t, d_pre, True) if need_p else None,
                d_hc,
                OuterGrad(d_pre, h) if need_w_hh else None,
                RowSumGrad(d_pre) if need_b else None,
                None, None)


class HiddenStates(Function):
    """The h of each step's stacked (h, c), joined as one (T, B, H) array (a copy)."""

    def forward(self, *hcs):
        return np.stack([hc[0] for hc in hcs])

    def backward(self, g):
        return tuple(SliceGrad((2,) + g.shape[1:], g.dtype, 0, g[t], True) for t in range(g.shape[0]))


def lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse: bool = False):
    """One direction of one LSTM layer over x (T, B, I) or token ids (T, B), from (h0, c0):
    (the h of every step (T, B, H), (h_n, c_n))."""
    n = w_hh.shape[-1]
    if (w_ih.ndim != 2 or w_ih.shape[0] != 4 * n or w_hh.shape != (4 * n, n) or h0.shape != c0.shape
            or h0.shape[-1:] != (n,) or (b_ih is None) is not (b_hh is None)
            or b_ih is not None and not b_ih.shape == b_hh.shape == (4 * n,)):
        raise ShapeError(f"lstm: expected w_ih (4H, I), w_hh (4H, H), b_ih and b_hh (4H,) or both None, "
                         f"h0 and c0 (B, H); got w_ih {w_ih.shape}, w_hh {w_hh.shape}, b_ih {_shape(b_ih)}, "
                         f"b_hh {_shape(b_hh)}, h0 {h0.shape}, c0 {c0.shape}")
    p = Projection.apply(x, w_ih)
    b = None if b_ih is None else b_ih + b_hh
    hc = stack([h0, c0])
    hcs = [None] * p.shape[0]
    # h W_hh^T reads W_hh transposed: below H=256 a contiguous copy, made once, halves the
    # product's time (B=32, H=64: 21 -> 10 µs); from 256 on kernels.matmul's swap of the
    # transposed view is faster still (130 against 183 µs at H=256, two threads)
    w_hh_t = w_hh.data.T if w_hh.shape[1] >= 256 else np.ascontiguousarray(w_hh.data.T)
    for t in (reversed(range(p.shape[0])) if reverse else range(p.shape[0])):
        hc = hcs[t] = LSTMStep.apply(p, hc, w_hh, b, t, w_hh_t)
    return HiddenStates.apply(*hcs), (hc[0], hc[1])
