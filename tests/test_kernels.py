"""Every fast kernel equals its numpy reference (the `foo` / `foo_ref` pairs of kernels/*.py).

The core is one table, `CASES`: for each kernel name, a hypothesis strategy drawing its
arguments in a given dtype, and the magnitude its rounding error scales with. One test runs
every row in float32 and float64. The comparison is |fast - ref| <= rtol * (|ref| + scale),
rtol 1e-5 for float32 and 1e-14 for float64: `scale` is the size of the terms that cancel
(e.g. |x| in x - logsumexp(x)), so a result near zero is judged against what it was computed
from, not against itself. Integer outputs (argmax indices) must match exactly.

Below the table: the edge cases named one by one (large logits, -inf, ties, ignore_index,
repeated indices, non-contiguous inputs, single row/column), and the bookkeeping tests that
keep the pairing honest (every `_ref` has a twin, every kernel the ops call is paired and
has a row here).
"""
from __future__ import annotations

import importlib
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

import tinygrad_rnn
from tinygrad_rnn import kernels
from tinygrad_rnn.kernels import blas, elementwise, kernel_pairs
from tinygrad_rnn.kernels import matmul as mm

from sum_order import assert_equal_up_to_sum_order

PAIRS = kernel_pairs()


def _preact_scale(x, h, w_ih, w_hh, b_ih, b_hh):
    """|x| @ |w_ih|.T + |h| @ |w_hh|.T (+ |b_ih| + |b_hh|): what bounds rnn_preact's rounding."""
    scale = np.abs(x) @ np.abs(w_ih).T + np.abs(h) @ np.abs(w_hh).T
    return scale if b_ih is None else scale + np.abs(b_ih) + np.abs(b_hh)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
# largest error seen over 3 runs of 50 draws per row: 1/50 of rtol in float32, 1/24 in
# float64 (measure: python tests/measure_tolerances.py tests/test_kernels.py)
RTOL = {F32: 1e-5, F64: 1e-14}
DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])


# ============================================================================ comparison
def assert_matches(fast, ref, dtype, scale=0.0, what=""):
    """fast == ref up to rtol * (|ref| + scale); dtypes and shapes must agree exactly."""
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, f"{what}: shape {fast.shape} != reference {ref.shape}"
    assert fast.dtype == ref.dtype, f"{what}: dtype {fast.dtype} != reference {ref.dtype}"
    if fast.dtype.kind in "iub":
        np.testing.assert_array_equal(fast, ref, err_msg=what)
        return
    rtol = RTOL[np.dtype(dtype)]
    # np.finfo.tiny: a subnormal result carries fewer significant bits than rtol asks for
    bound = rtol * (np.abs(ref) + np.abs(scale)) + np.finfo(ref.dtype).tiny
    with np.errstate(invalid="ignore"):
        same_special = (np.isnan(fast) & np.isnan(ref)) | (np.isinf(ref) & (fast == ref))
        bad = ~(same_special | (np.abs(fast - ref) <= bound))
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        allowed = bound[i] if bound.ndim else bound
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} elements differ; first at {i}: "
                             f"fast {fast[i]!r}, reference {ref[i]!r}, allowed |diff| {allowed}")


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


# ============================================================================ strategies
def floats(dtype, lo, hi):
    lo, hi = float(dtype.type(lo)), float(dtype.type(hi))  # bounds hypothesis can represent in dtype
    return st.floats(lo, hi, width=32 if dtype == F32 else 64, allow_nan=False,
                     allow_infinity=False, allow_subnormal=False)


def logit_values(dtype):
    # mostly ordinary logits, with ±1e3 ones mixed in: the shift by the row max must hold
    return st.one_of(floats(dtype, -4, 4), floats(dtype, -1e3, 1e3),
                     st.sampled_from([1e3, -1e3]).map(dtype.type))


# rows of 8+ columns take _row_max's eight-lane loop, shorter ones only its tail loop
row_shapes = st.tuples(st.integers(1, 6), st.one_of(st.integers(1, 40), st.integers(128, 140)))


@st.composite
def matrix(draw, dtype, shape=None, elements=None):
    shape = draw(row_shapes) if shape is None else shape
    return draw(hnp.arrays(dtype, shape, elements=floats(dtype, -3, 3) if elements is None else elements))


@st.composite
def laid_out(draw, arr, allow_broadcast=False):
    """The same values in another memory layout: C-contiguous, Fortran order (a transposed
    view's layout), every other row of a bigger buffer, or a zero-stride broadcast."""
    kinds = ["C", "F", "strided"] + (["broadcast"] if allow_broadcast else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "F" and arr.ndim >= 2:  # asfortranarray would turn a 0-d array into 1-d
        return np.asfortranarray(arr)
    if kind == "strided" and arr.ndim >= 1:
        buf = np.zeros((2 * arr.shape[0],) + arr.shape[1:], arr.dtype)
        buf[::2] = arr
        return buf[::2]
    if kind == "broadcast" and arr.ndim >= 1 and arr.size:
        return np.broadcast_to(arr[:1], arr.shape)
    return arr


@st.composite
def elementwise_args(draw, dtype, y_lo, y_hi, with_g=True):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=7))
    y = draw(laid_out(draw(hnp.arrays(dtype, shape, elements=floats(dtype, y_lo, y_hi)))))
    if not with_g:
        return (y,)
    g = draw(laid_out(draw(hnp.arrays(dtype, shape, elements=floats(dtype, -3, 3))), allow_broadcast=True))
    return g, y


@st.composite
def relu_backward_args(draw, dtype):
    # y is relu's output: zeros (the kink) and positives, with an occasional negative
    values = st.one_of(st.just(dtype.type(0)), floats(dtype, -1, 3))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=7))
    y = draw(laid_out(draw(hnp.arrays(dtype, shape, elements=values))))
    g = draw(laid_out(draw(hnp.arrays(dtype, shape, elements=floats(dtype, -3, 3))), allow_broadcast=True))
    return g, y


def ref(name):
    return PAIRS[name][1]


@st.composite
def softmax_backward_args(draw, dtype):
    x = draw(matrix(dtype, elements=logit_values(dtype)))
    g = draw(matrix(dtype, shape=x.shape))
    return g, ref("softmax_lastdim")(x)


@st.composite
def log_softmax_backward_args(draw, dtype):
    x = draw(matrix(dtype, elements=logit_values(dtype)))
    g = draw(matrix(dtype, shape=x.shape))
    return g, ref("log_softmax_lastdim")(x)


@st.composite
def targets_for(draw, rows, n):
    """Class indices, some rows replaced by ignore_index (outside or inside the class range)."""
    ignore_index = draw(st.sampled_from([-100, 0, n - 1]))
    t = draw(hnp.arrays(np.int64, rows, elements=st.integers(0, n - 1)))
    ignored = draw(hnp.arrays(np.bool_, rows))
    return np.where(ignored, ignore_index, t).astype(np.int64), ignore_index


@st.composite
def cross_entropy_forward_args(draw, dtype):
    x = draw(matrix(dtype, elements=logit_values(dtype)))
    t, ignore_index = draw(targets_for(*x.shape))
    return x, t, ignore_index


@st.composite
def cross_entropy_backward_args(draw, dtype):
    x, t, ignore_index = draw(cross_entropy_forward_args(dtype))
    _, e, s = ref("cross_entropy_forward")(x, t, ignore_index)
    g = draw(hnp.arrays(dtype, x.shape[0], elements=floats(dtype, -3, 3)))
    return g, e, s, t, ignore_index


@st.composite
def logsumexp_args(draw, dtype):
    # -inf entries too: a row of only -inf has logsumexp -inf, not NaN
    values = st.one_of(logit_values(dtype), st.just(dtype.type(-np.inf)))
    return (draw(matrix(dtype, elements=values)),)


@st.composite
def max_args(draw, dtype):
    # a small grid of values makes ties common: the first occurrence must win
    values = st.one_of(st.sampled_from([-1.0, 0.0, 2.0]).map(dtype.type), floats(dtype, -3, 3))
    return (draw(matrix(dtype, elements=values)),)


@st.composite
def gather_args(draw, dtype):
    w = draw(matrix(dtype))
    idx = draw(hnp.arrays(np.int64, draw(st.integers(0, 10)), elements=st.integers(0, w.shape[0] - 1)))
    return w, idx


@st.composite
def scatter_args(draw, dtype):
    num_rows = draw(st.integers(1, 6))
    # few distinct rows, many indices: repeats are the point
    idx = draw(hnp.arrays(np.int64, draw(st.integers(0, 12)), elements=st.integers(0, num_rows - 1)))
    g = draw(matrix(dtype, shape=(len(idx), draw(st.integers(1, 9)))))
    return g, idx, num_rows


@st.composite
def pick_columns_args(draw, dtype):
    w = draw(matrix(dtype))
    ids = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int32])), draw(st.integers(0, 10)),
                          elements=st.integers(0, w.shape[1] - 1)))
    return w, ids


@st.composite
def scatter_into_args(draw, dtype):
    out = draw(matrix(dtype, shape=(draw(st.integers(1, 6)), draw(st.integers(1, 9)))))
    idx = draw(hnp.arrays(np.int64, draw(st.integers(0, 12)), elements=st.integers(0, out.shape[0] - 1)))
    return out, idx, draw(matrix(dtype, shape=(len(idx), out.shape[1])))


@st.composite
def add_row_args(draw, dtype):
    out = draw(matrix(dtype))
    return out, draw(matrix(dtype, shape=(1, out.shape[1])))[0]


dims = st.integers(1, 12)


@st.composite
def matmul_args(draw, dtype, form):
    n, k, m = draw(dims), draw(dims), draw(dims)
    shapes = {"nn": ((n, k), (k, m)), "nt": ((n, m), (k, m)), "tn": ((n, k), (n, m))}[form]
    return tuple(draw(matrix(dtype, shape=s)) for s in shapes)


def matmul_scale(form):
    def scale(args):
        a, b = (np.abs(x) for x in args)
        return a @ b if form == "nn" else a @ b.T if form == "nt" else a.T @ b
    return scale


@st.composite
def rnn_preact_args(draw, dtype):
    b, i, h = draw(dims), draw(dims), draw(dims)
    x, hh = draw(matrix(dtype, shape=(b, i))), draw(matrix(dtype, shape=(b, h)))
    if draw(st.booleans()):  # token ids standing for one-hot rows
        x = draw(hnp.arrays(np.int64, b, elements=st.integers(0, i - 1)))
    w_ih, w_hh = draw(matrix(dtype, shape=(h, i))), draw(matrix(dtype, shape=(h, h)))
    if draw(st.booleans()):
        return x, hh, w_ih, w_hh, None, None
    return x, hh, w_ih, w_hh, draw(matrix(dtype, shape=(h,))), draw(matrix(dtype, shape=(h,)))


def rnn_preact_scale(args):
    x, h, w_ih, w_hh, b_ih, b_hh = (None if a is None else np.abs(a) for a in args)
    s = (w_ih.T[x] if x.dtype.kind in "iu" else x @ w_ih.T) + h @ w_hh.T
    return s if b_ih is None else s + b_ih + b_hh

@st.composite
def activation_backward_matmul_args(draw, dtype):
    kind = draw(st.sampled_from(["tanh_backward", "sigmoid_backward", "relu_backward"]))
    b, h, n = draw(dims), draw(dims), draw(dims)
    lo, hi = {"tanh_backward": (-1, 1), "sigmoid_backward": (0, 1), "relu_backward": (-1, 3)}[kind]
    y = draw(laid_out(draw(matrix(dtype, shape=(b, h), elements=floats(dtype, lo, hi)))))
    g = draw(laid_out(draw(matrix(dtype, shape=(b, h))), allow_broadcast=True))
    return kind, g, y, draw(matrix(dtype, shape=(h, n)))


def activation_backward_matmul_scale(args):
    g, w = np.abs(args[1]), np.abs(args[3])
    return g, g @ w  # |d_pre| <= |g| for all three activations


# --- optimizer steps: (arrays updated in place..., hyperparameters)
@st.composite
def optim_args(draw, dtype, kind):
    size = draw(st.integers(0, 20))
    vec = lambda lo, hi: draw(hnp.arrays(dtype, size, elements=floats(dtype, lo, hi)))  # noqa: E731
    p, g = vec(-3, 3), vec(-3, 3)
    lr = draw(st.floats(1e-3, 0.5))
    wd = draw(st.sampled_from([0.0, 0.01]))
    if kind == "sgd_step":
        momentum = draw(st.sampled_from([0.0, 0.9]))
        dampening = draw(st.sampled_from([0.0, 0.1]))
        return (p, g, vec(-1, 1), lr, momentum, dampening, wd,
                draw(st.booleans()) and dampening == 0, draw(st.booleans()))
    if kind == "adagrad_step":
        return p, g, vec(0, 3), lr, wd, 1e-8, draw(st.booleans())
    if kind == "rmsprop_step":
        gavg = vec(-1, 1)
        v = (gavg * gavg + vec(0.1, 2)).astype(dtype)  # v >= gavg^2: the centered variance stays >= 0
        return (p, g, v, vec(-1, 1), gavg, lr, 0.95, 1e-8, wd, draw(st.sampled_from([0.0, 0.5])),
                draw(st.booleans()))
    m = vec(-1, 1)
    v = (m * m + vec(0.01, 2)).astype(dtype)
    return p, g, m, v, lr, 0.9, 0.999, 1e-8, wd, draw(st.integers(1, 100))


@st.composite
def lstm_cell_args(draw, dtype):
    """(h W_hh^T, x W_ih^T, the bias or None, c): B rows of 4H gate pre-activations, summing to
    values from -30 to 30 (saturated gates included), in any layout."""
    batch, n = draw(st.integers(1, 6)), draw(st.one_of(st.integers(1, 12), st.integers(30, 34)))
    part = lambda shape: draw(laid_out(draw(hnp.arrays(dtype, shape, elements=floats(dtype, -15, 15)))))
    bias = draw(st.none() | hnp.arrays(dtype, 4 * n, elements=floats(dtype, -1, 1)))
    return part((batch, 4 * n)), part((batch, 4 * n)), bias, part((batch, n))


@st.composite
def lstm_cell_backward_args(draw, dtype):
    """(dL/d(h', c'), the forward's gate activations, c, tanh(c')), as lstm_cell leaves them."""
    hh, xw, bias, c = draw(lstm_cell_args(dtype))
    act, hc, tc = PAIRS["lstm_cell"][1](hh, xw, bias, c)
    g = draw(hnp.arrays(dtype, hc.shape, elements=floats(dtype, -3, 3)))
    return g, act, c, tc


# ============================================================================ the table
@dataclass(frozen=True)
class Case:
    args: Callable  # dtype -> strategy of argument tuples
    scale: Callable = lambda args: 0.0  # args -> magnitude of the cancelling terms
    mutates: tuple = ()  # argument positions updated in place (the kernel returns None)
    # The optimizer kernels compute in float64 and round once on store (kernels/optim.py); the
    # float32 reference rounds after every operation and, where an update cancels (m + (1-b1)
    # (g - m) with g ~ m), differs from the exact value by far more than 1e-5. Their float32
    # results are compared with the same reference evaluated on float64 copies, then rounded.
    ref_in_float64: bool = False


def row_scale(x):
    """Per row: the largest finite |x| plus log(n), the size of the terms in x - lse(x)."""
    finite = np.where(np.isfinite(x), np.abs(x), 0)
    return finite.max(axis=1, keepdims=True) * 2 + np.log(x.shape[1]) + 1


CASES = {
    "tanh_backward": Case(lambda dt: elementwise_args(dt, -1, 1), lambda a: np.abs(a[0])),
    "sigmoid_backward": Case(lambda dt: elementwise_args(dt, 0, 1), lambda a: np.abs(a[0])),
    "relu_backward": Case(relu_backward_args),
    "sigmoid": Case(lambda dt: elementwise_args(dt, -1e3, 1e3, with_g=False)),
    "softmax_lastdim": Case(lambda dt: st.tuples(matrix(dt, elements=logit_values(dt)))),
    "log_softmax_lastdim": Case(lambda dt: st.tuples(matrix(dt, elements=logit_values(dt))),
                                lambda a: row_scale(a[0])),
    "softmax_backward": Case(softmax_backward_args,
                             lambda a: np.abs(a[1]) * (np.abs(a[0]) + np.abs(a[0] * a[1]).sum(1, keepdims=True))),
    "log_softmax_backward": Case(log_softmax_backward_args,
                                 lambda a: np.abs(a[0]) + np.exp(a[1]) * np.abs(a[0]).sum(1, keepdims=True)),
    "logsumexp_lastdim": Case(logsumexp_args, lambda a: row_scale(a[0])[:, 0]),
    "max_lastdim": Case(max_args),
    "sum_rows": Case(lambda dt: st.tuples(matrix(dt)), lambda a: np.abs(a[0]).sum(axis=0)),
    "cross_entropy_forward": Case(cross_entropy_forward_args,  # the loss, e = exp(x - row max), its row sums
                                  lambda a: (row_scale(a[0])[:, 0], 1.0, a[0].shape[1])),
    "cross_entropy_backward": Case(cross_entropy_backward_args, lambda a: np.abs(a[0])[:, None]),
    "gather_rows": Case(gather_args),
    "scatter_add_rows": Case(scatter_args, lambda a: ref("scatter_add_rows")(np.abs(a[0]), a[1], a[2])),
    "matmul": Case(lambda dt: matmul_args(dt, "nn"), matmul_scale("nn")),
    "rnn_preact": Case(rnn_preact_args, rnn_preact_scale),
    "activation_backward_matmul": Case(activation_backward_matmul_args, activation_backward_matmul_scale),
    "pick_columns": Case(pick_columns_args),
    "scatter_add_rows_into": Case(scatter_into_args, mutates=(0,)),
    "add_row_into": Case(add_row_args, mutates=(0,)),
    "lstm_cell": Case(lstm_cell_args),
    "lstm_cell_backward": Case(lstm_cell_backward_args),
    "matmul_loop": Case(lambda dt: matmul_args(dt, "nn"), matmul_scale("nn")),
    "matmul_nt_loop": Case(lambda dt: matmul_args(dt, "nt"), matmul_scale("nt")),
    "matmul_tn_loop": Case(lambda dt: matmul_args(dt, "tn"), matmul_scale("tn")),
    "sgd_step": Case(lambda dt: optim_args(dt, "sgd_step"), mutates=(0, 2), ref_in_float64=True),
    "adagrad_step": Case(lambda dt: optim_args(dt, "adagrad_step"), mutates=(0, 2), ref_in_float64=True),
    "rmsprop_step": Case(lambda dt: optim_args(dt, "rmsprop_step"), mutates=(0, 2, 3, 4), ref_in_float64=True),
    "adam_step": Case(lambda dt: optim_args(dt, "adam_step"), mutates=(0, 2, 3), ref_in_float64=True),
}


def copy_args(args):
    return tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)


def run_pair(name, args):
    """(fast outputs, reference outputs, the scale); checks the fast kernel left its inputs alone."""
    fast, reference = PAIRS[name]
    case = CASES[name]
    before = copy_args(args)
    fast_args = copy_args(args) if case.mutates else args  # copies keep a mutated input's dtype and C order
    ref_args = copy_args(args)
    if case.ref_in_float64:
        ref_args = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in ref_args)
    out_fast = fast(*fast_args)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # log(0) of an all -inf row, ...
        out_ref = reference(*ref_args)
    if case.mutates:
        assert out_fast is None, f"{name} updates in place and should return None"
        out_fast = tuple(fast_args[i] for i in case.mutates)
        out_ref = tuple(ref_args[i].astype(args[i].dtype) for i in case.mutates)
        # what an in-place step is judged against: the values before and after it
        scale = tuple(np.abs(before[i]) + np.abs(r) for i, r in zip(case.mutates, out_ref))
    else:
        for a, b in zip(args, before):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} wrote into its input")
        scale = case.scale(args)
    return as_tuple(out_fast), as_tuple(out_ref), scale


# ============================================================================ the test
@DTYPES
@pytest.mark.parametrize("name", sorted(CASES))
@settings(deadline=None, max_examples=max(50, settings.default.max_examples))  # more under the soak profile
@given(data=st.data())
def test_fast_kernel_equals_its_reference(name, dtype, data):
    if name not in PAIRS:
        pytest.fail(f"CASES has a row for {name!r}, which is not a kernel pair")
    args = data.draw(CASES[name].args(dtype), label="args")
    out_fast, out_ref, scale = run_pair(name, args)
    assert len(out_fast) == len(out_ref), f"{name}: {len(out_fast)} outputs, reference {len(out_ref)}"
    scales = scale if isinstance(scale, tuple) else (scale,) * len(out_ref)
    for i, (f, r, s) in enumerate(zip(out_fast, out_ref, scales)):
        assert_matches(f, r, dtype, s, what=f"{name} output {i}")


# ============================================================================ named edge cases
def pair(name):
    return PAIRS[name]


LARGE = np.array([[1e3, -1e3, 0.0, 999.0],
                  [-1e3, -1e3, -1e3, -1e3],
                  [1e3, 1e3, 1e3, 1e3],
                  [-1e3, 1e3, -999.5, 0.5]])


@DTYPES
@pytest.mark.parametrize("name", ["softmax_lastdim", "log_softmax_lastdim", "logsumexp_lastdim"])
def test_large_logits_give_finite_results(name, dtype):
    x = LARGE.astype(dtype)
    fast, reference = pair(name)
    got = fast(x)
    assert np.isfinite(got).all(), got
    assert_matches(got, reference(x), dtype, row_scale(x) if got.ndim == 2 else row_scale(x)[:, 0], name)


@DTYPES
def test_large_logits_cross_entropy_is_finite_forward_and_backward(dtype):
    x = LARGE.astype(dtype)
    t = np.array([1, 0, 3, 2], dtype=np.int64)
    fwd, fwd_ref = pair("cross_entropy_forward")
    (loss, e, s), (loss_r, e_r, s_r) = fwd(x, t, -100), fwd_ref(x, t, -100)
    assert np.isfinite(loss).all() and np.isfinite(e).all() and np.isfinite(s).all()
    assert_matches(loss, loss_r, dtype, row_scale(x)[:, 0], "loss")
    assert_matches(e, e_r, dtype, 1.0, "exp(x - row max)")
    assert_matches(s, s_r, dtype, x.shape[1], "row sums")
    # row 0: lse = 1e3 + log(1 + e^-1), and the target logit is -1e3
    assert loss[0] == pytest.approx(2e3 + np.log1p(np.exp(-1.0)), rel=RTOL[dtype])
    g = np.ones(4, dtype)
    grad = pair("cross_entropy_backward")[0](g, e, s, t, -100)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad, pair("cross_entropy_backward")[1](g, e, s, t, -100))
    # softmax minus a one-hot sums to 0, up to rounding
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=8 * np.finfo(dtype).eps)


@DTYPES
def test_logsumexp_with_minus_inf(dtype):
    inf = np.inf
    x = np.array([[-inf, 0.0, 0.0], [-inf, -inf, -inf], [-inf, 1e3, -inf], [-inf, -inf, 2.0]], dtype)
    fast, reference = pair("logsumexp_lastdim")
    got = fast(x)
    np.testing.assert_allclose(got, [np.log(2), -inf, 1e3, 2.0], rtol=RTOL[dtype])
    with np.errstate(divide="ignore"):  # the reference takes log(0) for the all -inf row
        assert_matches(got, reference(x), dtype, 0.0, "logsumexp")


@DTYPES
def test_softmax_with_masked_entries(dtype):
    x = np.array([[-np.inf, 0.0, 0.0, -np.inf]], dtype)
    for name in ("softmax_lastdim", "log_softmax_lastdim"):
        fast, reference = pair(name)
        assert_matches(fast(x), reference(x), dtype, 1.0, name)
    np.testing.assert_array_equal(pair("softmax_lastdim")[0](x), [[0, 0.5, 0.5, 0]])


@DTYPES
def test_max_ties_pick_the_first_occurrence(dtype):
    x = np.array([[1, 3, 3, 2], [5, 5, 5, 5], [-1, -2, -1, -3], [0, -0.0, 0, 0]] + [[7] * 4], dtype)
    vals, idx = pair("max_lastdim")[0](x)
    np.testing.assert_array_equal(idx, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(vals, [3, 5, -1, 0, 7])
    # a long row, its maximum repeated at the end
    long = np.zeros((1, 137), dtype)
    long[0, [5, 20, 136]] = 4
    assert pair("max_lastdim")[0](long)[1][0] == 5


@DTYPES
@pytest.mark.parametrize("n", [1, 7, 65, 128, 137])
def test_row_max_finds_the_maximum_in_every_lane_and_in_the_tail(n, dtype):
    # a single 1e3 among -5s: if the shift missed it, exp(1e3 - shift) would overflow
    for pos in sorted({0, 3, 7, 8, 9, n - 9, n - 2, n - 1} & set(range(n))):
        x = np.full((1, n), -5.0, dtype)
        x[0, pos] = 1e3
        soft = pair("softmax_lastdim")[0](x)
        assert soft[0, pos] == 1 and np.isfinite(soft).all(), (n, pos)
        assert pair("logsumexp_lastdim")[0](x)[0] == dtype.type(1e3), (n, pos)


@DTYPES
def test_max_first_nan_wins(dtype):
    x = np.array([[1.0, np.nan, 3.0, np.nan], [2.0, 1.0, 0.0, 2.0]], dtype)
    (vals, idx), (vals_r, idx_r) = pair("max_lastdim")[0](x), pair("max_lastdim")[1](x)
    np.testing.assert_array_equal(idx, [1, 0])
    np.testing.assert_array_equal(idx, idx_r)
    assert np.isnan(vals[0]) and vals[1] == 2.0 and vals_r[1] == 2.0


@DTYPES
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_ignore_index_rows(dtype, ignore_index):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(dtype)
    t = np.array([ignore_index, 1, ignore_index, 3, 0], dtype=np.int64)
    fwd, fwd_ref = pair("cross_entropy_forward")
    (loss, e, s), (loss_r, _, _) = fwd(x, t, ignore_index), fwd_ref(x, t, ignore_index)
    np.testing.assert_array_equal(loss[[0, 2]], 0)
    assert (loss[[1, 3, 4]] > 0).all()
    assert_matches(loss, loss_r, dtype, row_scale(x)[:, 0], "loss")
    g = np.full(5, 0.25, dtype)
    bwd, bwd_ref = pair("cross_entropy_backward")
    grad = bwd(g, e, s, t, ignore_index)
    np.testing.assert_array_equal(grad[[0, 2]], 0)
    np.testing.assert_array_equal(grad, bwd_ref(g, e, s, t, ignore_index))


@DTYPES
def test_scatter_add_rows_sums_repeated_indices(dtype):
    g = np.arange(12, dtype=dtype).reshape(4, 3)
    idx = np.array([1, 1, 0, 1], dtype=np.int64)
    got = pair("scatter_add_rows")[0](g, idx, 3)
    np.testing.assert_array_equal(got, [[6, 7, 8], [0 + 3 + 9, 1 + 4 + 10, 2 + 5 + 11], [0, 0, 0]])
    np.testing.assert_array_equal(got, pair("scatter_add_rows")[1](g, idx, 3))


@DTYPES
def test_scatter_add_rows_into_sums_repeated_indices_into_a_transposed_buffer(dtype):
    # the engine passes W.T of a Fortran-ordered W (fast/lazy.py ColumnGrad)
    g = np.arange(12, dtype=dtype).reshape(4, 3)
    idx = np.array([1, 1, 0, 1], dtype=np.int64)
    for fast_or_ref in pair("scatter_add_rows_into"):
        w = np.ones((3, 2), dtype, order="F")
        fast_or_ref(w.T, idx, g)
        np.testing.assert_array_equal(w.T, [[7, 8, 9], [1 + 0 + 3 + 9, 1 + 1 + 4 + 10, 1 + 2 + 5 + 11]])


@pytest.mark.parametrize("name", ["pick_columns", "rnn_preact"])
@pytest.mark.parametrize("backend", [0, 1], ids=["fast", "reference"])
@pytest.mark.parametrize("bad", [-1, 5, 7])
def test_token_ids_out_of_range_raise_and_name_the_id(name, backend, bad):
    w = np.zeros((3, 5), np.float32)
    ids = np.array([0, bad, 4])
    args = (w, ids) if name == "pick_columns" else (ids, np.zeros((3, 3), np.float32), w, np.zeros((3, 3), np.float32), None, None)
    with pytest.raises(IndexError, match=f"token id {bad} is out of range for 5 input features"):
        pair(name)[backend](*args)


@DTYPES
@pytest.mark.parametrize("batch", [1, 32, 65])
@pytest.mark.parametrize("hidden", [64, 100, 256])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_preact_of_token_ids_is_the_one_hot_product(batch, hidden, bias, dtype):
    # the gather gives exactly what the product with one-hot rows gives (finite weights); the
    # recurrent product beside it may be computed transposed (see rnn_preact), equal up to the
    # order of its sums (tests/sum_order.py)
    rng = np.random.default_rng(7)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    ids = rng.integers(0, 65, batch)
    one_hot = np.eye(65, dtype=dtype)[ids]
    args = (r(batch, hidden), r(hidden, 65), r(hidden, hidden), r(hidden) if bias else None, r(hidden) if bias else None)
    np.testing.assert_array_equal(ref("rnn_preact")(ids, *args), ref("rnn_preact")(one_hot, *args))
    got = pair("rnn_preact")[0](ids, *args)
    assert_equal_up_to_sum_order(got, ref("rnn_preact")(one_hot, *args), _preact_scale(one_hot, *args))
    assert got.flags.c_contiguous and got.dtype == dtype
    np.testing.assert_array_equal(pair("pick_columns")[0](args[1], ids), one_hot @ args[1].T)


@DTYPES
@pytest.mark.parametrize("name", ["tanh_backward", "sigmoid_backward", "relu_backward"])
def test_elementwise_backward_on_non_contiguous_inputs(name, dtype):
    rng = np.random.default_rng(1)
    base_g = rng.standard_normal((6, 5)).astype(dtype)
    base_y = np.tanh(rng.standard_normal((6, 5))).astype(dtype)
    fast, reference = pair(name)
    views = [(base_g.T, base_y.T), (base_g[::2, 1:], base_y[1::2, :-1]),
             (np.broadcast_to(base_g[:1], (6, 5)), base_y), (base_g.T, np.ascontiguousarray(base_y.T))]
    for g, y in views:
        got = fast(g, y)
        assert got.shape == y.shape and got.flags.c_contiguous
        assert_matches(got, reference(g, y), dtype, np.abs(g), name)


@DTYPES
@pytest.mark.parametrize("name", ["tanh_backward", "sigmoid_backward", "relu_backward"])
def test_elementwise_backward_writes_into_a_given_row(name, dtype):
    """A recurrent step passes a row of its gradient block as `out`: the kernel fills it with
    what it would have returned, and touches nothing else of the block."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((4, 5)).astype(dtype)
    y = np.tanh(rng.standard_normal((4, 5))).astype(dtype)
    for kernel in pair(name):
        block = np.full((3, 4, 5), 7, dtype)
        got = kernel(g, y, out=block[1])
        assert np.shares_memory(got, block[1])
        np.testing.assert_array_equal(block[1], kernel(g, y))
        assert np.all(block[0] == 7) and np.all(block[2] == 7)


@DTYPES
@settings(deadline=None)
@given(data=st.data())
def test_lstm_kernels_are_their_references_bit_for_bit(dtype, data):
    """The LSTM layer's forward is the op-by-op step's bit for bit (tests/test_rnn.py), which
    needs these kernels to compute every number as the reference does, in its order."""
    hh, xw, bias, c = data.draw(lstm_cell_args(dtype))
    fast, ref = PAIRS["lstm_cell"]
    for a, b in zip(fast(hh, xw, bias, c), ref(hh, xw, bias, c)):
        np.testing.assert_array_equal(a, b)
    g, act, c, tc = data.draw(lstm_cell_backward_args(dtype))
    fast, ref = PAIRS["lstm_cell_backward"]
    for a, b in zip(fast(g, act, c, tc), ref(g, act, c, tc)):
        np.testing.assert_array_equal(a, b)


@DTYPES
def test_lstm_cell_writes_the_activations_over_its_input(dtype):
    """The layer's steps write the gates' activations over their row of the input projection."""
    rng = np.random.default_rng(0)
    hh, xw, c = (rng.standard_normal(s).astype(dtype) for s in ((3, 20), (3, 20), (3, 5)))
    want = PAIRS["lstm_cell"][1](hh, xw, None, c)
    for kernel in PAIRS["lstm_cell"]:
        buf = xw.copy()
        act, hc, tc = kernel(hh, buf, None, c, act=buf)
        assert act is buf
        for a, b in zip((act, hc, tc), want):
            np.testing.assert_array_equal(a, b)


@DTYPES
@pytest.mark.parametrize("ids", [False, True], ids=["dense", "token-ids"])
def test_rnn_preact_writes_into_a_given_row(ids, dtype):
    """The Elman step passes its row of the state block as `out`: filled with the returned
    values bit for bit, on every path (gather, swapped float32 products, the reference)."""
    rng = np.random.default_rng(4)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x = rng.integers(0, 65, 32) if ids else r(32, 65)
    args = (x, r(32, 64), r(64, 65), r(64, 64), r(64), r(64))
    for kernel in pair("rnn_preact"):
        block = np.full((3, 32, 64), 7, dtype)
        got = kernel(*args, out=block[1])
        assert np.shares_memory(got, block[1])
        np.testing.assert_array_equal(block[1], kernel(*args))
        assert np.all(block[0] == 7) and np.all(block[2] == 7)


@DTYPES
def test_sigmoid_on_non_contiguous_input(dtype):
    x = (np.random.default_rng(2).standard_normal((5, 7)) * 30).astype(dtype)
    fast, reference = pair("sigmoid")
    for view in (x.T, x[::2, ::3], x[:, 3]):
        assert_matches(fast(view), reference(view), dtype, 0.0, "sigmoid")


@DTYPES
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (1, 40), (7, 1)])
def test_row_kernels_on_a_single_row_or_column(shape, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    t = np.zeros(shape[0], np.int64)
    for name, args, scale in [
        ("softmax_lastdim", (x,), 0.0), ("log_softmax_lastdim", (x,), row_scale(x)),
        ("logsumexp_lastdim", (x,), row_scale(x)[:, 0]), ("max_lastdim", (x,), 0.0),
        ("softmax_backward", (g, ref("softmax_lastdim")(x)), 10.0),
        ("log_softmax_backward", (g, ref("log_softmax_lastdim")(x)), 10.0 * shape[1]),
        ("cross_entropy_forward", (x, t, -100), (row_scale(x)[:, 0], 1.0, shape[1])),  # loss, e, s
    ]:
        fast, reference = pair(name)
        outs = as_tuple(fast(*args))
        scales = scale if isinstance(scale, tuple) else (scale,) * len(outs)
        for f, r, sc in zip(outs, as_tuple(reference(*args)), scales):
            assert_matches(f, r, dtype, sc, f"{name} on {shape}")
    if shape[1] == 1:  # one class: probability 1, log-probability 0, loss 0
        np.testing.assert_array_equal(pair("softmax_lastdim")[0](x), 1)
        np.testing.assert_array_equal(pair("log_softmax_lastdim")[0](x), 0)
        np.testing.assert_array_equal(pair("cross_entropy_forward")[0](x, t, -100)[0], 0)


@DTYPES
@pytest.mark.parametrize("name", ["matmul_loop", "matmul_nt_loop", "matmul_tn_loop"])
def test_loop_matmuls_beyond_one_block(name, dtype):
    # sizes past the kernels' 64-row blocks and SIMD widths, with ragged remainders
    rng = np.random.default_rng(4)
    n, k, m = 33, 131, 70
    form = {"matmul_loop": "nn", "matmul_nt_loop": "nt", "matmul_tn_loop": "tn"}[name]
    shapes = {"nn": ((n, k), (k, m)), "nt": ((n, m), (k, m)), "tn": ((n, k), (n, m))}[form]
    args = tuple(rng.standard_normal(s).astype(dtype) for s in shapes)
    fast, reference = pair(name)
    assert_matches(fast(*args), reference(*args), dtype, matmul_scale(form)(args), name)



@DTYPES
@pytest.mark.parametrize("rows", [7, 8, 17, 32, 33])
@pytest.mark.parametrize("k, n", [(256, 256), (300, 257), (1024, 256), (256, 65), (65, 1024)])
def test_matmul_with_a_transposed_weight_is_numpys_up_to_the_order_of_its_sums(rows, k, n, dtype):
    # matmul computes thin h @ W.T as (W @ h.T).T inside its measured window (kernels/matmul.py):
    # the same terms, summed in the order the BLAS picks for each orientation (tests/sum_order.py)
    rng = np.random.default_rng(5)
    h = rng.standard_normal((rows, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    fast = pair("matmul")[0](h, w.T)
    assert_equal_up_to_sum_order(fast, np.matmul(h, w.T), np.abs(h) @ np.abs(w).T)
    assert fast.flags.c_contiguous and fast.dtype == dtype


@DTYPES
@pytest.mark.parametrize("batch", [1, 8, 32, 64, 65])
@pytest.mark.parametrize("inp, hidden", [(65, 64), (65, 100), (65, 256), (256, 300), (65, 1024)])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_preact_is_the_reference_up_to_the_order_of_its_sums(batch, inp, hidden, bias, dtype):
    # the transposed products inside rnn_preact add the reference's terms in the order the BLAS
    # picks for that orientation (tests/sum_order.py)
    rng = np.random.default_rng(6)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    args = (r(batch, inp), r(batch, hidden), r(hidden, inp), r(hidden, hidden),
            r(hidden) if bias else None, r(hidden) if bias else None)
    fast = pair("rnn_preact")[0](*args)
    assert_equal_up_to_sum_order(fast, ref("rnn_preact")(*args), _preact_scale(*args))
    assert fast.flags.c_contiguous and fast.dtype == dtype

# ============================================================================ numpy's BLAS inside kernels
needs_gemm = pytest.mark.skipif(not blas.HAVE_GEMM, reason="numpy's BLAS is not callable from numba here")


@njit(cache=False)
def _gemm_as(form, a, b, c):
    """c = a @ b ("nn"), a @ b.T ("nt") or a.T @ b ("tn") through blas.gemm, as numpy calls it."""
    if form == 0:
        m, k, n = a.shape[0], a.shape[1], b.shape[1]
        blas.gemm(blas.NO_TRANS, blas.NO_TRANS, m, n, k, a, k, b, n, c, n)
    elif form == 1:
        m, k, n = a.shape[0], a.shape[1], b.shape[0]
        blas.gemm(blas.NO_TRANS, blas.TRANS, m, n, k, a, k, b, k, c, n)
    else:
        k, m, n = a.shape[0], a.shape[1], b.shape[1]
        blas.gemm(blas.TRANS, blas.NO_TRANS, m, n, k, a, m, b, n, c, n)


def test_gemm_is_found_where_numpy_ships_its_ilp64_openblas():
    info = np.__config__.CONFIG["Build Dependencies"]["blas"]
    if info.get("name") != "scipy-openblas" or "USE64BITINT" not in info.get("openblas configuration", ""):
        pytest.skip(f"numpy's BLAS here is {info.get('name')}, not the ILP64 scipy-openblas of numpy's wheels")
    assert blas.HAVE_GEMM


@needs_gemm
@DTYPES
@settings(deadline=None, max_examples=60)
@given(data=st.data())
def test_gemm_inside_numba_is_np_matmul_bit_for_bit(dtype, data):
    n, k, m = (data.draw(st.integers(2, 70), label=s) for s in "nkm")
    form = data.draw(st.sampled_from(["nn", "nt", "tn"]), label="form")
    shapes = {"nn": ((n, k), (k, m)), "nt": ((n, k), (m, k)), "tn": ((k, n), (k, m))}[form]
    a, b = (data.draw(matrix(dtype, shape=s)) for s in shapes)
    expect = {"nn": lambda: np.matmul(a, b), "nt": lambda: np.matmul(a, b.T), "tn": lambda: np.matmul(a.T, b)}[form]()
    got = np.empty((n, m), dtype)
    _gemm_as(["nn", "nt", "tn"].index(form), a, b, got)
    np.testing.assert_array_equal(got, expect)


@DTYPES
@pytest.mark.parametrize("kind", ["tanh_backward", "sigmoid_backward", "relu_backward"])
@pytest.mark.parametrize("batch, hidden", [(1, 64), (2, 2), (32, 64), (32, 100), (65, 256), (8, 1)])
def test_activation_backward_matmul_is_its_two_kernels_bit_for_bit(kind, batch, hidden, dtype):
    # the fused Elman step's backward must give the op-by-op graph's exact numbers: its d_pre is
    # the activation kernel's and its state gradient np.matmul's, on the gemm path and off it
    rng = np.random.default_rng(8)
    g = rng.standard_normal((batch, hidden)).astype(dtype)
    y = np.tanh(rng.standard_normal((batch, hidden))).astype(dtype)
    w = rng.standard_normal((hidden, hidden)).astype(dtype)
    d_pre, d_h = pair("activation_backward_matmul")[0](kind, g, y, w)
    expect = getattr(elementwise, kind)(g, y)
    np.testing.assert_array_equal(d_pre, expect)
    np.testing.assert_array_equal(d_h, np.matmul(expect, w))
    assert d_h.flags.c_contiguous and d_h.dtype == dtype


@DTYPES
def test_activation_backward_matmul_writes_d_pre_into_a_given_row(dtype):
    rng = np.random.default_rng(9)
    g, y = rng.standard_normal((2, 32, 64)).astype(dtype)
    y = np.tanh(y)
    w = rng.standard_normal((64, 64)).astype(dtype)
    for kernel in pair("activation_backward_matmul"):
        block = np.full((3, 32, 64), 7, dtype)
        row = block[1]
        d_pre, d_h = kernel("tanh_backward", g, y, w, out=row)
        assert d_pre is row
        np.testing.assert_array_equal(block[1], elementwise.tanh_backward(g, y))
        np.testing.assert_array_equal(d_h, np.matmul(block[1], w))
        assert np.all(block[0] == 7) and np.all(block[2] == 7)


def _misfits(dtype):
    """Operands numpy would not hand to gemm as they are: the kernels must notice, before they
    write anything, and their callers take the np.matmul path."""
    rng = np.random.default_rng(10)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    w = r(32, 32)
    return {"Fortran-ordered weight": (r(16, 32), np.asfortranarray(w)),
            "strided state": (r(32, 32)[::2], w),
            "the weight as the state (numpy calls syrk)": (w, w)}


@needs_gemm
@DTYPES
@pytest.mark.parametrize("case", list(_misfits(F32)))
def test_gemm_kernels_leave_misfits_to_np_matmul(case, dtype):
    h, w = _misfits(dtype)[case]
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 5, h.shape[0])
    w_ih, b = rng.standard_normal((2, w.shape[0], 5)).astype(dtype), rng.standard_normal((2, w.shape[0])).astype(dtype)
    out = np.empty((h.shape[0], w.shape[0]), dtype)
    assert mm._gemm_add_picked_columns(out, h, w, False, w_ih[0], ids, b[0], b[1]) == mm._MISFIT
    assert_equal_up_to_sum_order(pair("rnn_preact")[0](ids, h, w_ih[0], w, b[0], b[1]),
                                 ref("rnn_preact")(ids, h, w_ih[0], w, b[0], b[1]),
                                 _preact_scale(np.eye(5, dtype=dtype)[ids], h, w_ih[0], w, b[0], b[1]))
    g, y = rng.standard_normal((2,) + h.shape).astype(dtype)
    d_pre = np.full(h.shape, 7, dtype)
    assert mm._activation_backward_gemm(0, g, y, d_pre, np.asfortranarray(w)).shape[0] == 0
    assert mm._activation_backward_gemm(0, g[:, ::2], y[:, ::2], d_pre[:, ::2], w[::2]).shape[0] == 0
    assert np.all(d_pre == 7)
    d_pre, d_h = pair("activation_backward_matmul")[0]("tanh_backward", g, y, w)
    np.testing.assert_array_equal(d_h, np.matmul(elementwise.tanh_backward(g, y), w))


@DTYPES
def test_without_gemm_the_kernels_give_the_same_bits(dtype, monkeypatch):
    # numpy built against another BLAS (or TINYGRAD_RNN_GEMM_IN_KERNELS=0): np.matmul's path
    rng = np.random.default_rng(12)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    ids = rng.integers(0, 65, 32)
    args = (ids, r(32, 64), r(64, 65), r(64, 64), r(64), r(64))
    g, y = r(32, 64), np.tanh(r(32, 64))
    with_gemm = (pair("rnn_preact")[0](*args), *pair("activation_backward_matmul")[0]("tanh_backward", g, y, args[3]))
    monkeypatch.setattr(blas, "HAVE_GEMM", False)
    without = (pair("rnn_preact")[0](*args), *pair("activation_backward_matmul")[0]("tanh_backward", g, y, args[3]))
    for a, b in zip(with_gemm, without):
        np.testing.assert_array_equal(a, b)


def test_the_environment_variable_turns_gemm_in_kernels_off():
    code = "from tinygrad_rnn.kernels import blas; print(blas.HAVE_GEMM)"
    env = {**os.environ, "TINYGRAD_RNN_GEMM_IN_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ============================================================================ bookkeeping
def test_every_kernel_pair_has_a_row_in_the_table():
    assert PAIRS, "kernel_pairs() is empty"
    missing = sorted(set(PAIRS) - set(CASES))
    assert not missing, f"kernels without a test row in CASES: {missing}"


def test_every_ref_in_every_kernel_module_has_a_fast_twin():
    names = [m.name for m in pkgutil.iter_modules(kernels.__path__)]
    assert names
    for modname in names:
        mod = importlib.import_module(f"tinygrad_rnn.kernels.{modname}")
        refs = [a for a, v in vars(mod).items() if a.endswith("_ref") and callable(v)]
        for attr in refs:
            name = attr[: -len("_ref")]
            fast = getattr(mod, name, None)
            assert callable(fast), f"kernels/{modname}.py: {attr} has no fast twin {name}"
            assert name in PAIRS, f"kernels/{modname}.py: {name} is not in kernel_pairs() (module not registered?)"
            assert PAIRS[name] == (fast, getattr(mod, attr))


def test_every_kernel_the_package_calls_is_paired():
    root = pathlib.Path(tinygrad_rnn.__file__).parent
    used = set()
    for path in root.rglob("*.py"):
        if "kernels" in path.relative_to(root).parts:
            continue
        used |= set(re.findall(r"\bK\.([a-z]\w*)", path.read_text()))
    assert used, "no K.<kernel> calls found outside kernels/: has the calling convention changed?"
    ops_used = {n for p in (root / "ops").glob("*.py") for n in re.findall(r"\bK\.([a-z]\w*)", p.read_text())}
    assert ops_used <= used and ops_used
    unpaired = sorted(used - set(PAIRS))
    assert not unpaired, f"K.<name> used but not a kernel pair: {unpaired}"


@DTYPES
def test_kernels_documented_as_bit_identical_are(dtype):
    # kernels/elementwise.py, nn.py and reduce.py claim these use the reference's operations in
    # the reference's order, with numpy's own exp: then not even the rounding (or a zero's sign)
    # may differ
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((40, 33)) * 30).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    y, s = np.tanh(x / 30), 1 / (1 + np.exp(-x / 30))
    t = (np.arange(40) % 33).astype(np.int64)
    t[::7] = -100
    _, e, sums = ref("cross_entropy_forward")(x, t, -100)
    for name, args in [("tanh_backward", (g, y)), ("sigmoid_backward", (g, s)), ("relu_backward", (g, x)),
                       ("sigmoid", (x,)), ("cross_entropy_backward", (g[:, 0].copy(), e, sums, t, -100)),
                       ("sum_rows", (g,)), ("sum_rows", (np.full((3, 2), -0.0, dtype),))]:
        fast, reference = pair(name)
        got, expected = fast(*args), reference(*args)
        np.testing.assert_array_equal(got, expected, err_msg=name)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected), err_msg=name)
    fast, reference = pair("add_row_into")  # in place: compare what each leaves in its buffer
    for out, row in [(x, g[0]), (np.full((3, 2), -0.0, dtype), np.full(2, -0.0, dtype))]:
        got, expected = out.copy(), out.copy()
        fast(got, row)
        reference(expected, row)
        np.testing.assert_array_equal(got, expected, err_msg="add_row_into")
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected), err_msg="add_row_into")
