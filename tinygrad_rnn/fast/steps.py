"""Fused recurrent steps: the Elman step h' = act(x W_ih^T + h W_hh^T + (b_ih + b_hh)) as one
graph node, and below it the LSTM (`LSTMCellStep`) and GRU (`GRUCellStep`) steps.

The same step written with generic ops (`nn.rnn._rnn_step_unfused`, what the cells record
with the fast path disabled: two matmuls, two adds, the activation, plus the transposes and the
bias sum) records about nine nodes per time step, and at small hidden sizes the per-node cost,
not arithmetic, decides the speed of a char-RNN. These ops do the identical arithmetic in the
identical order, so their forward values equal the op-by-op graph's (bit for bit where no
product is summed in another order); their backward is the chain rule of those same ops
(tests/test_rnn.py checks it against the op-by-op graph, finite differences and a hand-written
BPTT). Each is still one step: BPTT over a sequence still emerges from the graph that a loop
over time records.

Every step takes its input x either as a (B, I) matrix or as token ids (B,) standing for the
one-hot rows one_hot(ids, I): then x W_ih^T is a gather of W_ih's columns and W_ih's gradient
a scatter-add (kernels/matmul.py), the one-hot product's numbers without its arithmetic.
"""
import numpy as np

from .._args import is_token_ids
from ..autograd import Function, check_same_dtype, is_anomaly_enabled, is_grad_enabled
from ..kernels import K
from ..tensor import Tensor
from . import blocks
from .lazy import ColumnGrad, OuterGrad, RowsGrad, RowSumGrad


def _step_input(x, w_ih) -> tuple:
    """(x as the step keeps it, x for the dtype check, (B, I)) for a step's input: a (B, I)
    matrix, or token ids (B,) picking columns of w_ih; (B, I) is (-1, -1) for anything else,
    which the caller's shape check then refuses. Token ids are integers by design (no float to
    mismatch) and are copied, because backward's numba scatter indexes W_ih's gradient with
    them unchecked: a caller refilling its batch buffer in place before backward must not move
    the gradient, let alone write out of bounds."""
    if x.dtype.kind in "iu":  # is_token_ids, inline: every time step comes here
        return x.copy(), None, ((x.shape[0], w_ih.shape[-1]) if x.ndim == 1 else (-1, -1))
    return x, x, (x.shape if x.ndim == 2 else (-1, -1))


def _input_grads(d_pre, x, w_ih, need_x, need_w_ih, at=None) -> tuple:
    """(dL/dx, dL/dW_ih) of x W_ih^T given dL/d(x W_ih^T) = d_pre (at: where d_pre is a
    gradient row, blocks.grad_row). Token ids have no gradient; their weight gradient
    d_pre^T @ one_hot(ids) is a scatter-add into W_ih's columns."""
    if is_token_ids(x):
        return None, (ColumnGrad(w_ih.shape, x, d_pre, at) if need_w_ih else None)
    return (K.matmul(d_pre, w_ih) if need_x else None,
            OuterGrad(d_pre, x, None, at) if need_w_ih else None)  # d_pre.T @ x, summed over steps by the engine


def _shape(a):
    return None if a is None else a.shape


def _relu(a, out):
    return np.maximum(a, 0, out=out)


def _sigmoid(a, out):
    out[...] = K.sigmoid(a)
    return out


# activation -> (forward: the pre-activation into `out`, name of the kernel giving dL/dpre from (g, out));
# tanh is numpy's own SIMD ufunc, `out` its second argument, as the Tanh op uses it
ACTIVATIONS = {"tanh": (np.tanh, "tanh_backward"), "relu": (_relu, "relu_backward"),
               "sigmoid": (_sigmoid, "sigmoid_backward")}


class RNNCellStep(Function):
    """Inputs x (B, I) or token ids (B,), h (B, H), w_ih (H, I), w_hh (H, H), b_ih and b_hh (H,)
    or both None."""

    __slots__ = ("out_at",)  # (block, t): forward wrote its output into row t of `block` (blocks.py)

    def forward(self, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
        # every time step runs these checks, so they are written for speed (2.2 -> 1.1 µs):
        # identical dtypes pass at once, and one tuple comparison checks the shapes
        x, dense, (batch, features) = _step_input(x, w_ih)
        dt = h.dtype
        if not (w_ih.dtype is dt and w_hh.dtype is dt and (dense is None or dense.dtype is dt)
                and (b_ih is None or b_hh is not None and b_ih.dtype is dt and b_hh.dtype is dt)):
            check_same_dtype("rnn_cell", dense, h, w_ih, w_hh, b_ih, b_hh)  # raises, or passes equal dtypes
        n = h.shape[1] if h.ndim == 2 else -1
        if (h.shape, w_ih.shape, w_hh.shape) != ((batch, n), (n, features), (n, n)) \
                or (b_ih is None) is not (b_hh is None) or b_ih is not None and not b_ih.shape == b_hh.shape == (n,):
            raise ValueError(f"expected x (B, I) or token ids (B,), h (B, H), w_ih (H, I), w_hh (H, H), b_ih and "
                             f"b_hh (H,) or both None; got x {x.shape} {x.dtype}, h {h.shape}, w_ih {w_ih.shape}, "
                             f"w_hh {w_hh.shape}, b_ih {_shape(b_ih)}, b_hh {_shape(b_hh)}")
        act, grad_kernel = ACTIVATIONS[nonlinearity]
        out, block, t = blocks.next_row(h)  # beside the previous step's output (fast/blocks.py)
        act(K.rnn_preact(x, h, w_ih, w_hh, b_ih, b_hh, out), out)  # in place: one array, still hot
        self.saved = (x, h, w_ih, w_hh, out, grad_kernel)
        self.out_at = (block, t)
        return out

    @classmethod
    def apply_to_tensors(cls, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
        """`apply` for what a cell passes every time step: x an array (token ids or a (B, I)
        matrix), h, the weights and both biases Tensors. The same node, its input lists
        written out instead of collected by apply's loop over seven inputs: 0.5-1.2 µs of a
        13-14 µs step at H=64, the whole step 0.958x (docs/speed.md, tenth round)."""
        fn = object.__new__(cls)
        args = (x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
        out = fn._run_forward(args, (x, h._data, w_ih._data, w_hh._data, b_ih._data, b_hh._data, nonlinearity), {})
        needs = (False, h.requires_grad, w_ih.requires_grad, w_hh.requires_grad, b_ih.requires_grad,
                 b_hh.requires_grad, False)
        if any(needs) and is_grad_enabled():
            return fn._record(out, args, needs, (None, h._version, w_ih._version, w_hh._version,
                                                 b_ih._version, b_hh._version, None))
        return Tensor._make(out, False, None)

    def backward(self, g):
        x, h, w_ih, w_hh, out, grad_kernel = self.saved
        block, t = self.out_at
        need_x, need_h, need_w_ih, need_w_hh, need_b_ih, need_b_hh = self.needs_input_grad[:6]  # [6]: nonlinearity's
        # every weight gradient is a sum over d_pre's rows: kept in a gradient row, the engine
        # sums each over all steps at once (fast/blocks.py)
        d_pre, at = blocks.grad_row(block, t, out)
        if need_h:
            d_h = K.activation_backward_matmul(grad_kernel, g, out, w_hh, d_pre)[1]
        else:
            getattr(K, grad_kernel)(g, out, d_pre)
            d_h = None
        if at is not None and not is_anomaly_enabled():  # anomaly mode checks each step's own
            d_x = _input_grads(d_pre, x, w_ih, True, False)[0] if need_x else None
            return (d_x, d_h) + _run_grads(self.parents, block, t, at, d_pre, x, h, w_ih, (
                need_w_ih, need_w_hh, need_b_ih, need_b_hh))
        d_b = RowSumGrad(d_pre, at) if need_b_ih or need_b_hh else None
        d_x, d_w_ih = _input_grads(d_pre, x, w_ih, need_x, need_w_ih, at)
        return (d_x,
                d_h,
                d_w_ih,
                OuterGrad(d_pre, h, (block, t - 1) if t else None, at) if need_w_hh else None,
                d_b if need_b_ih else None,
                d_b if need_b_hh else None)


def _extends(run, t: int, w0, w1=None) -> bool:
    """True when `run` (or None) is the open run of the weights (w0, w1) (see RowsGrad.weight)
    that step t + 1 began or extended."""
    return run is not None and run.open and run.t0 == t + 1 and run.weight[0] is w0 and run.weight[1] is w1


def _run_grads(parents, block, t, at, d_pre, x, h, w_ih, needs) -> tuple:
    """(dW_ih, dW_hh, db_ih, db_hh) of an Elman step whose dL/dpre is row t of a gradient twin:
    each None where the step extends the run that the step after it (t + 1) left open
    (lazy.RowsGrad), else a new run that the step before may extend. W_ih's run needs token
    ids, and W_hh's needs the step's input state to be its block's row t - 1 (step 0's is
    not); where they are not, the step sends what a step without twin does."""
    need_w_ih, need_w_hh, need_b_ih, need_b_hh = needs
    entry = blocks.runs(block, at[0])  # [twin, W_hh's run, W_ih's run, the biases' run]
    d_w_ih = d_w_hh = d_b = None
    if need_w_hh:
        if t and block.holds(t - 1, h):
            if _extends(entry[1], t, parents[3]):
                entry[1].t0 = t
            else:
                d_w_hh = entry[1] = RowsGrad(RowsGrad.OUTER, (parents[3], None), at, states=block.rows())
        else:
            d_w_hh = OuterGrad(d_pre, h, None, at)
    if need_w_ih:
        if not is_token_ids(x):
            d_w_ih = _input_grads(d_pre, x, w_ih, False, True, at)[1]
        elif _extends(entry[2], t, parents[2]):
            entry[2].t0 = t
            entry[2].ids.append(x)
        else:
            d_w_ih = entry[2] = RowsGrad(RowsGrad.COLUMNS, (parents[2], None), at, ids=x, shape=w_ih.shape)
    if need_b_ih or need_b_hh:
        # one run for both biases, of the pair the step needs: a step needing only one starts anew
        b_ih, b_hh = parents[4] if need_b_ih else None, parents[5] if need_b_hh else None
        if _extends(entry[3], t, b_ih, b_hh):
            entry[3].t0 = t
        else:
            d_b = entry[3] = RowsGrad(RowsGrad.ROWSUM, (b_ih, b_hh), at)
    if t == 0:
        blocks.end_runs(block)  # no step before it in this block
    return d_w_ih, d_w_hh, d_b if need_b_ih else None, d_b if need_b_hh else None


class LSTMCellStep(Function):
    """One LSTM step as a single graph node; returns h' and c' stacked, shape (2, B, H).

    Inputs x (B, I) or token ids (B,), h and c (B, H), w_ih (4H, I), w_hh (4H, H), b_ih and
    b_hh (4H,) or both None, gates i, f, g, o in PyTorch's order. The forward is `nn.rnn._lstm_step`'s arithmetic
    in its order (the pre-activation as `rnn_preact` sums it, then sigmoid/tanh of each gate,
    c' = sf * c + si * tg, h' = so * tanh(c')), so the values equal the op-by-op graph's bit for
    bit; the backward is that step's chain rule. Op by op the step records about 15 nodes.
    """

    def forward(self, x, h, c, w_ih, w_hh, b_ih, b_hh):
        x, dense, (batch, features) = _step_input(x, w_ih)
        check_same_dtype("lstm_cell", dense, h, c, w_ih, w_hh, b_ih, b_hh)
        n = h.shape[1] if h.ndim == 2 else -1
        if h.ndim != 2 or c.shape != h.shape or batch != h.shape[0] \
                or w_ih.shape != (4 * n, features) or w_hh.shape != (4 * n, n):
            raise ValueError(f"expected x (B, I) or token ids (B,), h and c (B, H), w_ih (4H, I), w_hh (4H, H); "
                             f"got x {x.shape} {x.dtype}, h {h.shape}, c {c.shape}, w_ih {w_ih.shape}, "
                             f"w_hh {w_hh.shape}")
        gates = K.rnn_preact(x, h, w_ih, w_hh, b_ih, b_hh)
        si, sf = K.sigmoid(gates[:, :n]), K.sigmoid(gates[:, n:2 * n])
        tg, so = np.tanh(gates[:, 2 * n:3 * n]), K.sigmoid(gates[:, 3 * n:])
        out = np.empty((2,) + h.shape, h.dtype)
        np.add(sf * c, si * tg, out=out[1])
        tc = np.tanh(out[1])
        np.multiply(so, tc, out=out[0])
        self.saved = (x, h, c, w_ih, w_hh, si, sf, tg, so, tc)
        return out

    def backward(self, g):
        x, h, c, w_ih, w_hh, si, sf, tg, so, tc = self.saved
        need_x, need_h, need_c, need_w_ih, need_w_hh, need_b_ih, need_b_hh = self.needs_input_grad
        g_h, g_c = g[0], g[1]
        dc = g_c + K.tanh_backward(g_h * so, tc)  # through h' = so * tanh(c')
        n = h.shape[1]
        d_pre = np.empty((h.shape[0], 4 * n), h.dtype)
        d_pre[:, :n] = K.sigmoid_backward(dc * tg, si)
        d_pre[:, n:2 * n] = K.sigmoid_backward(dc * c, sf)
        d_pre[:, 2 * n:3 * n] = K.tanh_backward(dc * si, tg)
        d_pre[:, 3 * n:] = K.sigmoid_backward(g_h * tc, so)
        d_b = K.sum_rows(d_pre) if need_b_ih or need_b_hh else None
        d_x, d_w_ih = _input_grads(d_pre, x, w_ih, need_x, need_w_ih)
        return (d_x,
                K.matmul(d_pre, w_hh) if need_h else None,
                dc * sf if need_c else None,
                d_w_ih,
                OuterGrad(d_pre, h) if need_w_hh else None,
                d_b if need_b_ih else None,
                d_b if need_b_hh else None)


class GRUCellStep(Function):
    """One GRU step as a single graph node, PyTorch's formula with gates r, z, n stacked in
    w_ih (3H, I) and w_hh (3H, H): r = sigmoid(i_r + h_r), z = sigmoid(i_z + h_z),
    n = tanh(i_n + r * h_n), h' = (h - n) * z + n, where i = x w_ih^T + b_ih, h_ = h w_hh^T + b_hh
    (the reset gate multiplies h_n bias included). `nn.rnn._gru_step`'s arithmetic in its order,
    so the values equal the op-by-op graph's bit for bit; the backward is its chain rule."""

    def forward(self, x, h, w_ih, w_hh, b_ih, b_hh):
        x, dense, (batch, features) = _step_input(x, w_ih)
        check_same_dtype("gru_cell", dense, h, w_ih, w_hh, b_ih, b_hh)
        n = h.shape[1] if h.ndim == 2 else -1
        if h.ndim != 2 or batch != h.shape[0] or w_ih.shape != (3 * n, features) or w_hh.shape != (3 * n, n):
            raise ValueError(f"expected x (B, I) or token ids (B,), h (B, H), w_ih (3H, I), w_hh (3H, H); "
                             f"got x {x.shape} {x.dtype}, h {h.shape}, w_ih {w_ih.shape}, w_hh {w_hh.shape}")
        gi = K.pick_columns(w_ih, x) if is_token_ids(x) else K.matmul(x, w_ih.T)
        gh = K.matmul(h, w_hh.T)
        if b_ih is not None:
            gi, gh = gi + b_ih, gh + b_hh
        r = K.sigmoid(gi[:, :n] + gh[:, :n])
        z = K.sigmoid(gi[:, n:2 * n] + gh[:, n:2 * n])
        h_n = gh[:, 2 * n:]
        new = np.tanh(gi[:, 2 * n:] + r * h_n)
        self.saved = (x, h, w_ih, w_hh, r, z, new, h_n)
        return (h - new) * z + new

    def backward(self, g):
        x, h, w_ih, w_hh, r, z, new, h_n = self.saved
        need_x, need_h, need_w_ih, need_w_hh, need_b_ih, need_b_hh = self.needs_input_grad
        n = h.shape[1]
        d_n = K.tanh_backward(g * (1 - z), new)  # h' = (h - n) z + n: dh'/dn = 1 - z
        d_gi = np.empty((h.shape[0], 3 * n), h.dtype)
        d_gi[:, :n] = K.sigmoid_backward(d_n * h_n, r)
        d_gi[:, n:2 * n] = K.sigmoid_backward(g * (h - new), z)
        d_gi[:, 2 * n:] = d_n
        d_gh = d_gi.copy()
        d_gh[:, 2 * n:] = d_n * r  # the reset gate scales h_n
        d_x, d_w_ih = _input_grads(d_gi, x, w_ih, need_x, need_w_ih)
        return (d_x,
                K.matmul(d_gh, w_hh) + g * z if need_h else None,
                d_w_ih,
                OuterGrad(d_gh, h) if need_w_hh else None,
                K.sum_rows(d_gi) if need_b_ih else None,
                K.sum_rows(d_gh) if need_b_hh else None)
