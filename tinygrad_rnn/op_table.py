"""The op table: every differentiable op with its plain-numpy formula, value domain and shapes.

A row names an op, gives the tinygrad call and the numpy formula, the op's arity, the value
domain of its inputs and a hypothesis strategy drawing its shapes (plus any shape-dependent
arguments: dims, indices, targets). Two users read the same table, so adding an op is adding
one row:

- tests/test_ops.py runs every row through forward, dtype and float64 gradcheck tests;
- `tinygrad-rnn gradcheck` (`tinygrad_rnn.debug.check_gradients`) gradchecks every row, and
  the recurrent cells unrolled over a few steps, and prints a table of the errors.

The input strategies (op_cases.py) need hypothesis (the `test` extra), so only those two import
this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.special
from hypothesis import strategies as st

import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import Tensor


from tinygrad_rnn.op_cases import (  # noqa: F401  (the input strategies; tests and docs import them from here)
    Domain,
    ANY,
    NONZERO,
    AWAY_FROM_ZERO,
    POSITIVE,
    BASE,
    OFF_BOUNDS,
    DISTINCT,
    draw_values,
    shape,
    unary,
    broadcast,
    with_args,
    neg_spelling,
    reduce_case,
    var_case,
    dim_case,
    matmul_case,
    linear_case,
    batched_matmul,
    where_case,
    reshape_case,
    transpose_case,
    permute_case,
    basic_index_case,
    array_index_case,
    mask_index_case,
    cat_case,
    stack_case,
    split_case,
    chunk_case,
    expand_case,
    squeeze_case,
    unsqueeze_case,
    flatten_case,
    cross_entropy_case,
    embedding_case,
    one_hot_case)


# ============================================================================ numpy formulas
def np_axis(x, dim):
    return None if dim is None or x.ndim == 0 else dim


def np_reduce(f):
    def ref(x, dim, keepdim, numpy_style):
        return f(x, axis=np_axis(x, dim), keepdims=keepdim)
    return ref


def np_extremum(f, argf):
    def ref(x, dim, keepdim, numpy_style):
        values = f(x, axis=np_axis(x, dim), keepdims=keepdim)
        if isinstance(dim, int):
            return values, argf(x, axis=np_axis(x, dim), keepdims=keepdim)
        return values
    return ref


def np_logsumexp(x, dim, keepdim, numpy_style):
    return np.log(np.sum(np.exp(x), axis=np_axis(x, dim), keepdims=keepdim))


def np_softmax(x, dim):
    e = np.exp(x - np.max(x, axis=np_axis(x, dim), keepdims=True))
    return e / np.sum(e, axis=np_axis(x, dim), keepdims=True)


def np_log_softmax(x, dim):
    return np.log(np_softmax(x, dim))


def np_cross_entropy(logits, targets, reduction, ignore_index, targets_as_tensor):
    cd = 0 if logits.ndim == 1 else 1
    logp = logits - np.log(np.sum(np.exp(logits), axis=cd, keepdims=True))
    keep = targets != ignore_index
    safe = np.expand_dims(np.where(keep, targets, 0), cd)
    losses = np.where(keep, -np.take_along_axis(logp, safe, axis=cd).squeeze(cd), 0.0)
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / keep.sum()


def np_split(x, dim, split):
    """PyTorch's rule: pieces of `split` elements, the last one shorter; an empty dim still
    gives one (empty) piece, so cat(x.split(k)) round-trips."""
    n = x.shape[dim]
    sizes = ([min(split, n - i) for i in range(0, n, split)] or [0]) if isinstance(split, int) else split
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=dim))


def np_expand(x, target):
    lead = len(target) - x.ndim
    return np.broadcast_to(x, tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(target)))


def np_squeeze(x, dim):
    if dim is None:
        return np.squeeze(x)
    dims = dim if isinstance(dim, tuple) else (dim,)
    return np.squeeze(x, axis=tuple({d % max(x.ndim, 1) for d in dims if x.ndim and x.shape[d] == 1}))


def np_flatten(x, start, end):
    if x.ndim == 0:
        return x.reshape(1)
    s, e = start % x.ndim, end % x.ndim
    return x.reshape(x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


def seeded_mask(shape, p, seed):
    """The scaled keep-mask dropout uses after `manual_seed(seed)`, read off dropout(ones):
    dropout is x * mask, so this is the formula's only unknown. Its values are checked too."""
    tg.manual_seed(seed)
    mask = F.dropout(tg.ones(*shape, dtype=np.float64), p).numpy()
    if not np.all((mask == 0) | np.isclose(mask, 1 / (1 - p), rtol=1e-12, atol=0)):
        raise AssertionError(f"dropout(ones, p={p}) holds values other than 0 and 1/(1-p): {mask}")
    return mask


def seeded_dropout(x, p, seed):
    tg.manual_seed(seed)
    return F.dropout(x, p)


# ============================================================================ tinygrad calls
def tg_reduce(method):
    def fn(x, dim, keepdim, numpy_style):
        f = getattr(x, method)
        return f(axis=dim, keepdims=keepdim) if numpy_style else f(dim, keepdim)
    return fn


def tg_var(x, dim, keepdim, numpy_style, correction):
    if numpy_style:
        return x.var(axis=dim, keepdims=keepdim, correction=correction)
    return x.var(dim, keepdim, correction=correction)


def tg_getitem(x, index, as_list=False, as_tensor=False):
    if as_tensor:
        index = Tensor(index)
    return x[index]


def tg_where(a, b, cond, as_tensor):
    return tg.where(Tensor(cond) if as_tensor else cond, a, b)


def tg_cross_entropy(logits, targets, reduction, ignore_index, targets_as_tensor):
    t = Tensor(targets) if targets_as_tensor else targets
    return F.cross_entropy(logits, t, reduction=reduction, ignore_index=ignore_index)


# ============================================================================ the table
@dataclass(frozen=True)
class Op:
    name: str
    fn: Callable  # (*tensors, **kwargs) -> Tensor or tuple of Tensors
    ref: Callable  # (*float64 arrays, **kwargs) -> array or tuple of arrays
    arity: int
    domain: object  # a Domain for every input, or a tuple with one per input
    shapes: st.SearchStrategy  # draws (input shapes, kwargs)

    def domains(self):
        return self.domain if isinstance(self.domain, tuple) else (self.domain,) * self.arity


def op(name, fn, ref, arity=1, domain=ANY, shapes=None):
    if shapes is None:
        shapes = unary() if arity == 1 else broadcast(arity)
    return Op(name, fn, ref, arity, domain, shapes)


CLAMP_BOUNDS = st.sampled_from(((-1, 1), (-1.0, None), (None, 1.0), (-1.0, 1.0)))
REDUCE = reduce_case()
REDUCE_NONEMPTY = reduce_case(nonempty=True)

OPS = [
    # --- binary arithmetic, broadcasting
    op("add", lambda a, b: a + b, np.add, 2),
    op("sub", lambda a, b: a - b, np.subtract, 2),
    op("mul", lambda a, b: a * b, np.multiply, 2),
    op("div", lambda a, b: a / b, np.divide, 2, (ANY, AWAY_FROM_ZERO)),
    op("pow_tensor", lambda a, b: a ** b, np.power, 2, (BASE, ANY)),
    op("add_method", lambda a, b: a.add(b), np.add, 2),
    op("div_method", lambda a, b: a.div(b), np.divide, 2, (ANY, AWAY_FROM_ZERO)),
    # --- unary arithmetic and scalar operands (reflected operators included)
    op("neg", lambda x: -x, np.negative),
    op("pow_int", lambda x, p: x ** p, lambda x, p: x ** float(p),
       shapes=with_args(None, p=st.sampled_from((0, 1, 2, 3)))),
    op("pow_real", lambda x, p: x ** p, lambda x, p: x ** p, domain=POSITIVE,
       shapes=with_args(None, p=st.sampled_from((0.5, -1.5, 2.5, -1.0, 1 / 3)))),
    op("x_plus_2", lambda x: x + 2, lambda x: x + 2),
    op("2_plus_x", lambda x: 2 + x, lambda x: 2 + x),
    op("2_minus_x", lambda x: 2 - x, lambda x: 2 - x),
    op("x_minus_2.5", lambda x: x - 2.5, lambda x: x - 2.5),
    op("2_times_x", lambda x: 2 * x, lambda x: 2 * x),
    op("1_over_x", lambda x: 1 / x, lambda x: 1 / x, domain=AWAY_FROM_ZERO),
    op("x_over_2", lambda x: x / 2, lambda x: x / 2),
    op("x_squared", lambda x: x ** 2, np.square),
    op("to_double_and_back", lambda x: x.double().to(x.dtype), lambda x: x.copy()),  # Cast, both ways
    op("2_pow_x", lambda x: 2 ** x, lambda x: 2.0 ** x),
    # --- elementwise math
    op("exp", tg.exp, np.exp),
    op("log", tg.log, np.log, domain=POSITIVE),
    op("sqrt", tg.sqrt, np.sqrt, domain=POSITIVE),
    op("abs", lambda x: x.abs(), np.abs, domain=NONZERO),
    op("tanh", tg.tanh, np.tanh),
    op("sigmoid", tg.sigmoid, scipy.special.expit),
    op("relu", tg.relu, lambda x: np.maximum(x, 0), domain=NONZERO),
    op("relu_method", lambda x: x.relu(), lambda x: np.maximum(x, 0), domain=NONZERO),
    op("maximum", tg.maximum, np.maximum, 2, DISTINCT),
    op("minimum", tg.minimum, np.minimum, 2, DISTINCT),
    op("maximum_method", lambda a, b: a.maximum(b), np.maximum, 2, DISTINCT),
    op("clamp", lambda x, b: tg.clamp(x, *b), lambda x, b: np.clip(x, *b), domain=OFF_BOUNDS,
       shapes=with_args(None, b=CLAMP_BOUNDS)),
    op("clip_method", lambda x, b: x.clip(min=b[0], max=b[1]), lambda x, b: np.clip(x, *b),
       domain=OFF_BOUNDS, shapes=with_args(None, b=CLAMP_BOUNDS)),
    op("where", tg_where, lambda a, b, cond, as_tensor: np.where(cond, a, b), 2, shapes=where_case()),
    # --- matmul: every numpy `@` case
    op("matmul_1d_1d", tg.matmul, np.matmul, 2, shapes=matmul_case((1, 1))),
    op("matmul_1d_2d", lambda a, b: a @ b, np.matmul, 2, shapes=matmul_case((1, 2))),
    op("matmul_2d_1d", lambda a, b: a @ b, np.matmul, 2, shapes=matmul_case((2, 1))),
    op("matmul_2d", lambda a, b: a.matmul(b), np.matmul, 2, shapes=matmul_case((2, 2))),
    op("matmul_batched", lambda a, b: a @ b, np.matmul, 2, shapes=batched_matmul("(n,k),(k,m)->(n,m)")),
    op("matmul_batched_any", tg.matmul, np.matmul, 2, shapes=batched_matmul("(n?,k),(k,m?)->(n?,m?)")),
    # --- reductions
    op("sum", tg_reduce("sum"), np_reduce(np.sum), shapes=REDUCE),
    op("mean", tg_reduce("mean"), np_reduce(np.mean), shapes=REDUCE_NONEMPTY),
    op("max", tg_reduce("max"), np_extremum(np.max, np.argmax), domain=DISTINCT, shapes=REDUCE_NONEMPTY),
    op("min", tg_reduce("min"), np_extremum(np.min, np.argmin), domain=DISTINCT, shapes=REDUCE_NONEMPTY),
    op("logsumexp", tg_reduce("logsumexp"), np_logsumexp, shapes=REDUCE_NONEMPTY),
    op("var", tg_var, lambda x, dim, keepdim, numpy_style, correction:
       np.var(x, axis=np_axis(x, dim), keepdims=keepdim, ddof=correction), shapes=var_case()),
    # --- movement and indexing
    op("reshape", lambda x, target, varargs: x.reshape(*target) if varargs else x.reshape(target),
       lambda x, target, varargs: x.reshape(target), shapes=reshape_case()),
    op("view", lambda x, target, varargs: x.view(*target) if varargs else x.view(target),
       lambda x, target, varargs: x.reshape(target), shapes=reshape_case()),
    op("transpose", lambda x, d0, d1: x.transpose(d0, d1), lambda x, d0, d1: np.swapaxes(x, d0, d1),
       shapes=transpose_case()),
    op("transpose_default", lambda x: x.transpose(), lambda x: np.swapaxes(x, -1, -2),
       shapes=unary(shape(min_dims=2, max_dims=4, max_side=3))),
    op("permute", lambda x, dims: x.permute(*dims), lambda x, dims: np.transpose(x, dims), shapes=permute_case()),
    op("T", lambda x: x.T, lambda x: x.T, shapes=unary(shape(max_dims=4, max_side=3))),
    op("getitem_basic", tg_getitem, lambda x, index: x[index], shapes=basic_index_case()),
    op("getitem_int_array", tg_getitem, lambda x, index, **_: x[index], shapes=array_index_case()),
    op("getitem_bool_mask", tg_getitem, lambda x, index: x[index], shapes=mask_index_case()),
    op("cat", lambda *ts, dim: tg.cat(ts, dim), lambda *xs, dim: np.concatenate(xs, axis=dim), 3, shapes=cat_case()),
    op("cat_one", lambda t, dim: tg.cat([t], dim=dim), lambda x, dim: x.copy(), shapes=cat_case(1)),
    op("stack", lambda *ts, dim: tg.stack(ts, dim), lambda *xs, dim: np.stack(xs, axis=dim), 3, shapes=stack_case()),
    op("split", lambda x, dim, split: x.split(split, dim), np_split, shapes=split_case()),
    op("chunk", lambda x, dim, chunks: x.chunk(chunks, dim),
       lambda x, dim, chunks: np_split(x, dim, max(1, -(-x.shape[dim] // chunks))), shapes=chunk_case()),
    op("expand", lambda x, target: x.expand(*target), np_expand, shapes=expand_case()),
    op("broadcast_to", lambda x, target: x.broadcast_to(np_expand(x.data, target).shape), np_expand,
       shapes=expand_case()),
    op("squeeze", lambda x, dim: x.squeeze(dim), np_squeeze, shapes=squeeze_case()),
    op("unsqueeze", lambda x, dim: x.unsqueeze(dim), lambda x, dim: np.expand_dims(x, dim), shapes=unsqueeze_case()),
    op("flatten", lambda x, start, end: x.flatten(start, end), np_flatten, shapes=flatten_case()),
    # --- nn
    op("softmax", lambda x, dim: tg.softmax(x, dim), np_softmax, shapes=dim_case(nonempty_dim=True)),
    op("log_softmax", lambda x, dim: F.log_softmax(x, dim), np_log_softmax, shapes=dim_case(nonempty_dim=True)),
    op("softmax_method", lambda x, dim: x.softmax(dim), np_softmax, shapes=dim_case(nonempty_dim=True)),
    op("cross_entropy_C", tg_cross_entropy, np_cross_entropy, shapes=cross_entropy_case("(C,)")),
    op("cross_entropy_NC", tg_cross_entropy, np_cross_entropy, shapes=cross_entropy_case("(N,C)")),
    op("cross_entropy_NCd", tg_cross_entropy, np_cross_entropy, shapes=cross_entropy_case("(N,C,d)")),
    op("embedding", lambda w, indices: F.embedding(indices, w), lambda w, indices: w[indices],
       shapes=embedding_case()),
    op("linear", F.linear, lambda x, w, b: x @ w.T + b, 3, shapes=linear_case(True)),
    op("linear_no_bias", F.linear, lambda x, w: x @ w.T, 2, shapes=linear_case(False)),
    op("one_hot_matmul", lambda w, indices: F.one_hot(indices, w.shape[0], dtype=w.dtype) @ w,
       lambda w, indices: np.eye(w.shape[0])[indices] @ w, shapes=one_hot_case()),
    op("dropout_p0", lambda x, training: F.dropout(x, 0.0, training), lambda x, training: x,
       shapes=with_args(None, training=st.booleans())),
    op("dropout_eval", lambda x, p: F.dropout(x, p, training=False), lambda x, p: x,
       shapes=with_args(None, p=st.sampled_from((0.1, 0.5, 1.0)))),
    op("dropout_seeded", seeded_dropout, lambda x, p, seed: x * seeded_mask(x.shape, p, seed),
       shapes=with_args(None, p=st.sampled_from((0.2, 0.5, 0.9)), seed=st.integers(0, 2**16))),
]


def register(spec: Op) -> Op:
    """Add a row (an op of your own, say) for `tinygrad-rnn gradcheck` to check; names are unique."""
    if any(s.name == spec.name for s in OPS):
        raise ValueError(f"op table: an op named {spec.name!r} is already registered")
    OPS.append(spec)
    return spec


# ============================================================================ unrolled cells
# Not single ops but what BPTT differentiates: a cell stepped `STEPS` times, every weight an
# input of the check. Values come from a seeded generator rather than hypothesis, whose first
# draws (all zeros) would sit every relu exactly on its kink.
CELL_STEPS, CELL_BATCH, CELL_INPUT, CELL_HIDDEN = 3, 2, 3, 4


@dataclass(frozen=True)
class UnrolledCell:
    name: str
    make: Callable  # () -> a float64 cell module

    def case(self, rng: np.random.Generator):
        """(fn, inputs): fn(xs, *state, *weights) stacks the hidden state h of every step;
        the state is (h0,), or (h0, c0) for an LSTM."""
        cell = self.make()
        names = [n for n, _ in cell.named_parameters()]
        n_states = 2 if isinstance(cell, tg.nn.LSTMCell) else 1

        def unrolled(xs, *rest):
            state, params = rest[:n_states], dict(zip(names, rest[n_states:]))
            hs = []
            for t in range(xs.shape[0]):
                out = tg.nn.utils.functional_call(cell, params, (xs[t], state if n_states > 1 else state[0]))
                state = out if n_states > 1 else (out,)
                hs.append(state[0])
            return tg.stack(hs)

        shapes = [(CELL_STEPS, CELL_BATCH, CELL_INPUT)] + [(CELL_BATCH, CELL_HIDDEN)] * n_states
        shapes += [p.shape for p in cell.parameters()]
        return unrolled, [Tensor(rng.uniform(-1, 1, s), requires_grad=True) for s in shapes]


CELLS = [
    UnrolledCell(f"RNNCell[{act}] x{CELL_STEPS}",
                 lambda act=act: tg.nn.RNNCell(CELL_INPUT, CELL_HIDDEN, nonlinearity=act).double())
    for act in ("tanh", "relu", "sigmoid")
] + [
    UnrolledCell(f"{Cell.__name__} x{CELL_STEPS}", lambda Cell=Cell: Cell(CELL_INPUT, CELL_HIDDEN).double())
    for Cell in (tg.nn.LSTMCell, tg.nn.GRUCell)
]
