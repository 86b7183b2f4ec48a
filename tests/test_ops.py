"""Every op against its plain-numpy formula, with float64 gradients checked by finite differences.

The core is one table, `OPS`: a row names an op, gives the tinygrad call and the numpy formula,
the op's arity, the value domain of its inputs and a strategy drawing its shapes (plus any
shape-dependent arguments: dims, indices, targets). `test_op` runs every row through the same
checks, so adding an op means adding one row. Below the table are the rules a formula cannot
express: tie rules, dtype rules, error messages, dropout's randomness, large-input stability.

Every test runs on both kernel backends (the `backend` fixture).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import ShapeError, Tensor


@pytest.fixture(autouse=True, params=["numba", "numpy"])
def backend(request):
    tg.set_backend(request.param)
    yield request.param
    tg.set_backend("numba")


# ============================================================================ value domains
@dataclass(frozen=True)
class Domain:
    """Where input values are drawn: a union of closed intervals. `distinct` makes every value
    across all of an op's inputs differ by at least one grid step (0.01), for ops whose gradient
    jumps at ties (max, min, maximum, minimum)."""
    intervals: tuple
    distinct: bool = False


ANY = Domain(((-3.0, 3.0),))
NONZERO = Domain(((-3.0, -0.1), (0.1, 3.0)))  # abs, relu: kink at 0
AWAY_FROM_ZERO = Domain(((-3.0, -0.5), (0.5, 3.0)))  # divisors: pole at 0
POSITIVE = Domain(((0.1, 4.0),))  # log, sqrt, real powers
BASE = Domain(((0.5, 2.5),))  # a ** b with tensor b: d/db needs log(a)
OFF_BOUNDS = Domain(((-3.0, -1.1), (-0.9, 0.9), (1.1, 3.0)))  # clamp bounds are drawn from {-1, 1}
DISTINCT = Domain(((-3.0, 3.0),), distinct=True)


def draw_values(data, domains, shapes) -> list:
    if any(d.distinct for d in domains):
        sizes = [math.prod(s) for s in shapes]
        # A seeded sample of a grid, not element-wise draws: hypothesis would happily draw
        # equal values, and keeping them apart by rejection is far too slow.
        grid = np.concatenate([np.arange(lo, hi + 1e-9, 0.01) for lo, hi in domains[0].intervals])
        seed = data.draw(st.integers(0, 2**32 - 1), label="distinct-values seed")
        flat = np.random.default_rng(seed).choice(grid, size=sum(sizes), replace=False)
        bounds = np.cumsum(sizes)[:-1]
        return [part.reshape(s) for part, s in zip(np.split(flat, bounds), shapes)]
    out = []
    for i, (d, s) in enumerate(zip(domains, shapes)):
        elements = st.one_of(*[st.floats(lo, hi) for lo, hi in d.intervals])
        out.append(data.draw(hnp.arrays(np.float64, s, elements=elements), label=f"input {i}"))
    return out


# ============================================================================ shape strategies
# Each draws `(input_shapes, kwargs)`; kwargs go to both the tinygrad call and the formula.

def shape(min_dims=0, max_dims=3, min_side=0, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def unary(shapes=None):
    return (shape() if shapes is None else shapes).map(lambda s: ((s,), {}))


def broadcast(n=2, max_dims=3):
    return hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=max_dims,
                                             min_side=0, max_side=4).map(lambda b: (b.input_shapes, {}))


def with_args(shapes, **kwargs):
    """Fixed shapes plus kwargs, each either a constant or a strategy."""
    def build(s):
        return st.fixed_dictionaries({k: v if isinstance(v, st.SearchStrategy) else st.just(v)
                                      for k, v in kwargs.items()}).map(lambda kw: ((s,), kw))
    return (shape() if shapes is None else shapes).flatmap(build)


def neg_spelling(draw, d, n):
    """`d` or the same axis counted from the end: ops must accept both."""
    return draw(st.sampled_from((d, d - n)))


@st.composite
def reduce_case(draw, nonempty=False, max_dims=3):
    """dim=None, an int, or a tuple; keepdim; PyTorch (dim=, keepdim=) or numpy (axis=, keepdims=)."""
    s = list(draw(shape(max_dims=max_dims)))
    nd = len(s)
    kind = draw(st.sampled_from(("all", "int", "tuple") if nd else ("all", "int")))
    if kind == "all":
        dim, reduced = None, list(range(nd))
    elif kind == "int":
        dim = draw(st.integers(-max(nd, 1), max(nd, 1) - 1))
        reduced = [dim % nd] if nd else []
    else:
        reduced = draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
        dim = tuple(neg_spelling(draw, d, nd) for d in reduced)
    if nonempty:  # a max or mean over no elements is undefined; kept dims may still be empty
        s = [max(n, 1) if i in reduced else n for i, n in enumerate(s)]
    kw = dict(dim=dim, keepdim=draw(st.booleans()), numpy_style=draw(st.booleans()))
    return (tuple(s),), kw


@st.composite
def var_case(draw):
    (s,), kw = draw(reduce_case(nonempty=True))
    s = list(s)
    reduced = [i for i in range(len(s)) if kw["dim"] is None or i in
               {d % len(s) for d in (kw["dim"] if isinstance(kw["dim"], tuple) else (kw["dim"],))}]
    correction = draw(st.sampled_from((0, 1))) if reduced else 0
    if correction and math.prod(s[i] for i in reduced) < 2:  # N - 1 = 0 divides by zero
        s[reduced[0]] = 2
    return (tuple(s),), dict(kw, correction=correction)


@st.composite
def dim_case(draw, nonempty_dim=False, min_dims=0, max_dims=3):
    """A shape and one valid dim (0-d tensors accept dim 0 and -1, as in PyTorch)."""
    s = list(draw(shape(min_dims=min_dims, max_dims=max_dims)))
    nd = len(s)
    dim = draw(st.integers(-max(nd, 1), max(nd, 1) - 1))
    if nonempty_dim and nd:
        s[dim] = max(s[dim], 1)
    return (tuple(s),), dict(dim=dim)


@st.composite
def matmul_case(draw, ndims):
    """(a.ndim, b.ndim) in {1, 2}; inner and outer sizes may be 0."""
    n, k, m = (draw(st.integers(0, 4)) for _ in range(3))
    a = (k,) if ndims[0] == 1 else (n, k)
    b = (k,) if ndims[1] == 1 else (k, m)
    return (a, b), {}


def batched_matmul(signature):
    return hnp.mutually_broadcastable_shapes(signature=signature, max_dims=2, min_side=0,
                                             max_side=3).map(lambda b: (b.input_shapes, {}))


@st.composite
def where_case(draw):
    a, b, c = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, min_side=0, max_side=4)).input_shapes
    cond = draw(hnp.arrays(np.bool_, c))
    return (a, b), dict(cond=cond, as_tensor=draw(st.booleans()))


@st.composite
def reshape_case(draw):
    s = draw(shape(max_dims=3))
    target = list(draw(st.permutations(s)))
    for _ in range(draw(st.integers(0, 2))):
        target.insert(draw(st.integers(0, len(target))), 1)
    if target and math.prod(s) > 0 and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return (s,), dict(target=tuple(target), varargs=draw(st.booleans()))


@st.composite
def transpose_case(draw):
    s = draw(shape(min_dims=1, max_dims=4, max_side=3))
    nd = len(s)
    return (s,), dict(d0=draw(st.integers(-nd, nd - 1)), d1=draw(st.integers(-nd, nd - 1)))


@st.composite
def permute_case(draw):
    s = draw(shape(max_dims=4, max_side=3))
    perm = draw(st.permutations(range(len(s))))
    return (s,), dict(dims=tuple(neg_spelling(draw, d, len(s)) for d in perm))


@st.composite
def basic_index_case(draw):
    s = draw(shape(max_dims=3))
    index = draw(hnp.basic_indices(s, min_dims=0, allow_newaxis=True, allow_ellipsis=True))
    return (s,), dict(index=index)


@st.composite
def array_index_case(draw):
    """Integer-array indexing, alone, after a slice, or before an Ellipsis; values repeat
    (small dims, long index arrays) so backward must accumulate."""
    s = draw(shape(min_dims=1, max_dims=3, min_side=1))
    index_shape = shape(min_dims=0, max_dims=2, max_side=5)
    kind = draw(st.sampled_from(("all_dims", "after_slice", "before_ellipsis", "list", "tensor")))
    if kind == "after_slice" and len(s) >= 2:
        idx = draw(hnp.arrays(np.int64, draw(index_shape), elements=st.integers(-s[1], s[1] - 1)))
        return (s,), dict(index=(slice(None), idx))
    first = draw(hnp.arrays(np.int64, draw(index_shape), elements=st.integers(-s[0], s[0] - 1)))
    if kind == "before_ellipsis":
        return (s,), dict(index=(first, Ellipsis))
    if kind == "list":  # `x[[0, 0, 2]]`: a Python list gathers like an array
        return (s,), dict(index=np.atleast_1d(first).tolist(), as_list=True)
    if kind == "tensor":  # an int64 Tensor as the index
        return (s,), dict(index=first, as_tensor=True)
    return (s,), dict(index=draw(hnp.integer_array_indices(s, result_shape=index_shape)))


@st.composite
def mask_index_case(draw):
    s = draw(shape(min_dims=1, max_dims=3))
    k = draw(st.integers(1, len(s)))  # a mask over the leading k dims
    return (s,), dict(index=draw(hnp.arrays(np.bool_, s[:k])))


@st.composite
def cat_case(draw, n=3):
    base = list(draw(shape(min_dims=1, max_dims=3)))
    d = draw(st.integers(0, len(base) - 1))
    shapes = []
    for _ in range(n):
        base[d] = draw(st.integers(0, 4))
        shapes.append(tuple(base))
    return tuple(shapes), dict(dim=neg_spelling(draw, d, len(base)))


@st.composite
def stack_case(draw, n=3):
    s = draw(shape(max_dims=3))
    nd = len(s) + 1
    return (s,) * n, dict(dim=draw(st.integers(-nd, nd - 1)))


@st.composite
def split_case(draw):
    (s,), kw = draw(dim_case(min_dims=1))
    n = s[kw["dim"]]
    if draw(st.booleans()):
        kw["split"] = draw(st.integers(1, 5))
    else:
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        kw["split"] = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    return (s,), kw


@st.composite
def chunk_case(draw):
    (s,), kw = draw(dim_case(min_dims=1))
    return (s,), dict(kw, chunks=draw(st.integers(1, 5)))


ones_heavy_shape = st.lists(st.sampled_from((1, 1, 0, 2, 3)), max_size=4).map(tuple)


@st.composite
def expand_case(draw):
    s = draw(ones_heavy_shape)
    lead = draw(st.lists(st.integers(0, 3), max_size=2))
    kept = [draw(st.integers(0, 3)) if n == 1 else draw(st.sampled_from((n, -1))) for n in s]
    return (s,), dict(target=tuple(lead + kept))


@st.composite
def squeeze_case(draw):
    s = draw(ones_heavy_shape)
    nd = len(s)
    kind = draw(st.sampled_from(("none", "int", "tuple") if nd else ("none", "int")))
    if kind == "none":
        dim = None
    elif kind == "int":
        dim = draw(st.integers(-max(nd, 1), max(nd, 1) - 1))
    else:
        dim = tuple(neg_spelling(draw, d, nd)
                    for d in draw(st.lists(st.integers(0, nd - 1), min_size=1, unique=True)))
    return (s,), dict(dim=dim)


@st.composite
def unsqueeze_case(draw):
    s = draw(shape(max_dims=3))
    return (s,), dict(dim=draw(st.integers(-len(s) - 1, len(s))))


@st.composite
def flatten_case(draw):
    s = draw(shape(max_dims=4, max_side=3))
    nd = max(len(s), 1)
    a, b = sorted((draw(st.integers(0, nd - 1)), draw(st.integers(0, nd - 1))))
    return (s,), dict(start=neg_spelling(draw, a, nd), end=neg_spelling(draw, b, nd))


@st.composite
def cross_entropy_case(draw, layout):
    C = draw(st.integers(1, 4))
    if layout == "(C,)":
        logits, tshape = (C,), ()
    elif layout == "(N,C)":
        N = draw(st.integers(0, 4))
        logits, tshape = (N, C), (N,)
    else:
        N, *ds = draw(st.lists(st.integers(0, 3), min_size=2, max_size=3))
        logits, tshape = (N, C, *ds), (N, *ds)
    reduction = draw(st.sampled_from(("mean", "sum", "none")))
    # -100 is PyTorch's default; an ignore_index inside [0, C) ignores that class
    ignore_index = draw(st.sampled_from((-100, -1) + tuple(range(C))))
    targets = draw(hnp.arrays(np.int64, tshape, elements=st.one_of(st.integers(0, C - 1), st.just(ignore_index))))
    if reduction == "mean" and not np.any(targets != ignore_index):
        # a mean over no counted rows is 0/0, as in PyTorch; make one row count if any can
        valid = [c for c in range(C) if c != ignore_index]
        if targets.size and valid:
            targets.flat[0] = valid[0]
        else:
            reduction = "sum"
    return (logits,), dict(targets=targets, reduction=reduction, ignore_index=ignore_index,
                           targets_as_tensor=draw(st.booleans()))


@st.composite
def embedding_case(draw):
    num, dim = draw(st.integers(1, 4)), draw(st.integers(0, 4))
    # more lookups than rows, so indices repeat and backward must scatter-add
    idx = draw(hnp.arrays(np.int64, shape(max_dims=2, max_side=6), elements=st.integers(0, num - 1)))
    return ((num, dim),), dict(indices=idx)


@st.composite
def one_hot_case(draw):
    C, m = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    idx = draw(hnp.arrays(np.int64, shape(max_dims=2), elements=st.integers(0, C - 1)))
    return ((C, m),), dict(indices=idx)


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
    assert np.all((mask == 0) | np.isclose(mask, 1 / (1 - p), rtol=1e-12, atol=0))
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
    op("one_hot_matmul", lambda w, indices: F.one_hot(indices, w.shape[0], dtype=w.dtype) @ w,
       lambda w, indices: np.eye(w.shape[0])[indices] @ w, shapes=one_hot_case()),
    op("dropout_p0", lambda x, training: F.dropout(x, 0.0, training), lambda x, training: x,
       shapes=with_args(None, training=st.booleans())),
    op("dropout_eval", lambda x, p: F.dropout(x, p, training=False), lambda x, p: x,
       shapes=with_args(None, p=st.sampled_from((0.1, 0.5, 1.0)))),
    op("dropout_seeded", seeded_dropout, lambda x, p, seed: x * seeded_mask(x.shape, p, seed),
       shapes=with_args(None, p=st.sampled_from((0.2, 0.5, 0.9)), seed=st.integers(0, 2**16))),
]


# ============================================================================ the factory
def as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def assert_same(got, expected, rtol, atol, what):
    got, expected = as_tuple(got), as_tuple(expected)
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, expected {len(expected)}"
    for g, e in zip(got, expected):
        assert isinstance(g, Tensor), f"{what}: got {type(g).__name__}, expected a Tensor"
        e = np.asarray(e)
        assert g.shape == e.shape, f"{what}: shape {g.shape}, expected {e.shape}"
        if e.dtype.kind in "iu":  # argmax/argmin indices: exact
            assert g.dtype.kind in "iu", f"{what}: indices of dtype {g.dtype}"
            np.testing.assert_array_equal(g.numpy(), e, err_msg=what)
        else:
            np.testing.assert_allclose(g.numpy(), e, rtol=rtol, atol=atol, err_msg=what, equal_nan=False)


def float_outputs(out):
    return [o for o in as_tuple(out) if isinstance(o, Tensor) and o.dtype.kind == "f"]


def seeded_backward(spec, arrays, kwargs, dtype):
    """Backward of every float output with a fixed random seed gradient; returns the inputs'
    gradients and the dtypes the gradients had when they reached the inputs (before the leaf's
    own cast could hide a widened gradient)."""
    inputs = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    arrived = []
    for t in inputs:
        t.register_hook(lambda g: arrived.append(g.dtype))
    rng = np.random.default_rng(0)
    for o in float_outputs(spec.fn(*inputs, **kwargs)):
        if o.requires_grad:
            o.backward(rng.standard_normal(o.shape).astype(dtype), retain_graph=True)
    return [t.grad for t in inputs], arrived


@pytest.mark.parametrize("spec", OPS, ids=lambda s: s.name)
@given(data=st.data())
def test_op(spec, data):
    shapes, kwargs = data.draw(spec.shapes, label="shapes and arguments")
    arrays = draw_values(data, spec.domains(), shapes)
    expected = spec.ref(*[a.copy() for a in arrays], **kwargs)

    # forward, float64: the numpy formula
    assert_same(spec.fn(*[Tensor(a.copy()) for a in arrays], **kwargs), expected, 1e-10, 1e-12, "float64 forward")

    # forward, float32: stays float32 and agrees to float32 precision
    out32 = spec.fn(*[Tensor(a.astype(np.float32)) for a in arrays], **kwargs)
    for o in float_outputs(out32):
        assert o.dtype == np.float32, f"float32 inputs gave a {o.dtype} output"
    assert_same(out32, expected, 1e-4, 1e-4, "float32 forward")

    # backward, float32: gradients stay float32 all the way and match the float64 ones.
    # Also the only backward run for empty outputs, which gradcheck has nothing to check on.
    grads32, arrived = seeded_backward(spec, arrays, kwargs, np.float32)
    grads64, _ = seeded_backward(spec, arrays, kwargs, np.float64)
    assert all(dt == np.float32 for dt in arrived), f"float32 inputs received gradients of dtypes {arrived}"
    for a, g32, g64 in zip(arrays, grads32, grads64):
        assert (g32 is None) == (g64 is None)
        if g32 is not None:
            assert g32.dtype == np.float32 and g32.shape == a.shape and g64.shape == a.shape
            # gradcheck cannot see NaN (every comparison with NaN is False), so look here
            assert np.all(np.isfinite(g64.numpy())), f"non-finite gradient {g64.numpy()}"
            np.testing.assert_allclose(g32.numpy(), g64.numpy(), rtol=1e-4, atol=1e-4, equal_nan=False)

    # backward, float64: finite differences with gradcheck's default tolerances
    inputs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    assert tg.gradcheck(lambda *ts: spec.fn(*ts, **kwargs), inputs)


def test_op_names_are_unique():
    names = [s.name for s in OPS]
    assert len(set(names)) == len(names), "duplicate op names in the table"


# ============================================================================ tie rules
@st.composite
def tied_reduce_case(draw):
    """Values from {0, 1, 2}: ties are the common case, not the exception."""
    (s,), kw = draw(reduce_case(nonempty=True))
    x = draw(hnp.arrays(np.float64, s, elements=st.sampled_from((0.0, 1.0, 2.0))))
    return x, kw["dim"], kw["keepdim"]


def first_occurrence_grad(x, dim, argf):
    """One-hot at the first extremum of each reduced slice, in C order over the reduced dims."""
    nd = x.ndim
    if dim is None or nd == 0:
        dims = tuple(range(nd))
    else:
        dims = tuple(sorted({d % nd for d in (dim if isinstance(dim, tuple) else (dim,))}))
    keep = tuple(i for i in range(nd) if i not in dims)
    rows = np.transpose(x, keep + dims).reshape(-1, math.prod(x.shape[d] for d in dims))
    grad = np.zeros_like(rows)
    grad[np.arange(len(rows)), argf(rows, axis=1)] = 1
    return np.transpose(grad.reshape([x.shape[p] for p in keep + dims]), np.argsort(keep + dims))


@pytest.mark.parametrize("name,argf", [("max", np.argmax), ("min", np.argmin)])
@given(case=tied_reduce_case())
def test_extremum_gradient_goes_to_first_occurrence(name, argf, case):
    x_np, dim, keepdim = case
    x = Tensor(x_np.copy(), requires_grad=True)
    out = getattr(x, name)(dim, keepdim)
    values = out[0] if isinstance(out, tuple) else out
    values.backward(np.ones(values.shape))
    np.testing.assert_array_equal(x.grad.numpy(), first_occurrence_grad(x_np, dim, argf))


def test_extremum_tie_examples():
    x = Tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0], [0, 0, 0]])
    x.grad = None
    values, indices = x.max(dim=1)
    values.sum().backward()
    np.testing.assert_array_equal(indices.numpy(), [1, 0])
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    z = Tensor([[0.0, 4.0, 0.0], [5.0, 5.0, 5.0]], requires_grad=True)
    values, indices = z.min(dim=1, keepdim=True)
    values.sum().backward()
    np.testing.assert_array_equal(indices.numpy(), [[0], [0]])
    np.testing.assert_array_equal(z.grad.numpy(), [[1, 0, 0], [1, 0, 0]])
    y = Tensor([[5.0, 5.0], [5.0, 5.0]], requires_grad=True)
    y.min(dim=(0, 1)).backward()
    np.testing.assert_array_equal(y.grad.numpy(), [[1, 0], [0, 0]])


@pytest.mark.parametrize("fn", [tg.maximum, tg.minimum], ids=["maximum", "minimum"])
def test_binary_extremum_ties_split_the_gradient(fn):
    a = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = Tensor([1.0, 0.0, 3.0], requires_grad=True)
    fn(a, b).sum().backward()
    winner_a = 1.0 if fn is tg.maximum else 0.0
    np.testing.assert_array_equal(a.grad.numpy(), [0.5, winner_a, 0.5])
    np.testing.assert_array_equal(b.grad.numpy(), [0.5, 1 - winner_a, 0.5])
    # a broadcast side collects half of every tie it takes part in
    c = Tensor([2.0, 2.0, 2.0, 2.0], requires_grad=True)
    s = Tensor(2.0, requires_grad=True)
    fn(c, s).sum().backward()
    np.testing.assert_array_equal(c.grad.numpy(), [0.5] * 4)
    assert s.grad.item() == 2.0


# ============================================================================ dtype rules
SCALARS = [2.5, 2, np.float64(2.5), np.float32(2.5), np.int64(2)]
SCALAR_OPS = {
    "x+s": lambda x, s: x + s, "s+x": lambda x, s: s + x,
    "x-s": lambda x, s: x - s, "s-x": lambda x, s: s - x,
    "x*s": lambda x, s: x * s, "s*x": lambda x, s: s * x,
    "x/s": lambda x, s: x / s, "s/x": lambda x, s: s / x,
    "x**s": lambda x, s: x ** s, "s**x": lambda x, s: s ** x,
    "maximum(x,s)": lambda x, s: tg.maximum(x, s), "maximum(s,x)": lambda x, s: tg.maximum(s, x),
    "minimum(x,s)": lambda x, s: tg.minimum(x, s), "minimum(s,x)": lambda x, s: tg.minimum(s, x),
    "clamp(min=s)": lambda x, s: x.clamp(min=s), "clamp(max=s)": lambda x, s: x.clamp(max=s),
    "where(c,x,s)": lambda x, s: tg.where(x > 1, x, s), "where(c,s,x)": lambda x, s: tg.where(x > 1, s, x),
}


@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: f"{type(s).__name__}")
@pytest.mark.parametrize("name", SCALAR_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numbers_follow_the_tensor_dtype(name, scalar, dtype):
    x = Tensor(np.array([0.5, 1.5, 3.0], dtype), requires_grad=True)
    arrived = []
    x.register_hook(lambda g: arrived.append(g.dtype))
    out = SCALAR_OPS[name](x, scalar)
    assert out.dtype == dtype
    out.backward(np.ones(out.shape, dtype))
    assert arrived == [np.dtype(dtype)], f"the gradient reached x as {arrived}"


def test_python_floats_make_float32_and_explicit_dtypes_are_exact():
    assert Tensor(0.1).dtype == np.float32
    assert Tensor([0.1, 0.2]).dtype == np.float32
    assert tg.tensor([[1.0]]).dtype == np.float32
    assert Tensor([1, 2]).dtype == np.int64
    assert Tensor(np.zeros(2)).dtype == np.float64  # numpy arrays keep their dtype
    # an explicit float64 must not round through float32 on the way
    assert Tensor([0.1], dtype=np.float64).numpy()[0] == 0.1
    assert tg.tensor(0.1, dtype=np.float64).item() == 0.1


MIXED_DTYPE_OPS = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b), ("maximum", tg.maximum),
    ("minimum", tg.minimum), ("where", lambda a, b: tg.where(np.array([True, False]), a, b)),
    ("matmul", lambda a, b: a @ b), ("cat", lambda a, b: tg.cat([a, b])),
    ("stack", lambda a, b: tg.stack([a, b])),
]


@pytest.mark.parametrize("name,fn", MIXED_DTYPE_OPS, ids=[n for n, _ in MIXED_DTYPE_OPS])
@pytest.mark.parametrize("order", ["32,64", "64,32"])
def test_mixing_float_widths_raises_naming_the_op(name, fn, order):
    a, b = Tensor(np.ones(2, np.float32)), Tensor(np.ones(2, np.float64))
    if order == "64,32":
        a, b = b, a
    with pytest.raises(ShapeError) as e:
        fn(a, b)
    assert name in str(e.value).lower()


SHAPE_MISMATCH_OPS = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b), ("maximum", tg.maximum),
    ("minimum", tg.minimum), ("where", lambda a, b: tg.where(True, a, b)),
    ("matmul", lambda a, b: a @ b), ("cat", lambda a, b: tg.cat([a, b])),
    ("stack", lambda a, b: tg.stack([a, b])),
]


@pytest.mark.parametrize("name,fn", SHAPE_MISMATCH_OPS, ids=[n for n, _ in SHAPE_MISMATCH_OPS])
def test_shape_mismatch_names_the_op_and_both_shapes(name, fn):
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ShapeError) as e:
        fn(a, b)
    msg = str(e.value)
    assert name in msg.lower() and "(2, 3)" in msg and "(4, 5)" in msg, msg


def test_matmul_rejects_0d_operands():
    with pytest.raises(ShapeError, match="(?i)matmul"):
        Tensor(np.ones(())) @ Tensor(np.ones(3))


def test_expand_refuses_minus_one_in_a_new_leading_dim():
    with pytest.raises(ValueError, match="-1"):
        Tensor(np.ones(3)).expand(-1, 3)


@pytest.mark.parametrize("targets,bad", [([0, 3], "3"), ([-2, 1], "-2"), ([7, -100], "7")])
def test_cross_entropy_out_of_range_target_names_the_target(targets, bad):
    logits = Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises((IndexError, ValueError), match=rf"target {bad}\b"):
        F.cross_entropy(logits, np.array(targets))
    # (N, C, d) logits: the target is named just the same
    with pytest.raises((IndexError, ValueError), match=rf"target {bad}\b"):
        F.cross_entropy(Tensor(np.zeros((2, 3, 1))), np.array(targets)[:, None])


def test_cross_entropy_rejects_bad_targets_and_reductions():
    logits = Tensor(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"\(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ShapeError, match="integer"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ShapeError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")


@pytest.mark.parametrize("bad", [3, 10, -1])
def test_embedding_out_of_range_index(bad):
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises((IndexError, ValueError), match=rf"index {bad}\b"):
        F.embedding(np.array([0, bad, 1]), w)
    with pytest.raises((TypeError, ValueError), match="integer"):
        F.embedding(np.array([0.0]), w)


def test_one_hot_values_and_errors():
    np.testing.assert_array_equal(F.one_hot(np.array([2, 0, 2]), 3).numpy(), np.eye(3)[[2, 0, 2]])
    assert F.one_hot(np.array([1, 3])).shape == (2, 4)  # num_classes inferred from the max
    assert F.one_hot(Tensor([[0, 1]]), 2).dtype == np.float32
    assert F.one_hot(np.array(1), 2).shape == (2,)
    with pytest.raises(IndexError, match="index 5"):
        F.one_hot(np.array([0, 5]), 3)
    with pytest.raises(IndexError, match="index -1"):
        F.one_hot(np.array([0, -1]), 3)
    with pytest.raises(TypeError, match="integers"):
        F.one_hot(np.array([0.0]), 3)


@pytest.mark.parametrize("make", [
    lambda: Tensor([1, 2], requires_grad=True),
    lambda: tg.tensor(np.array([True, False]), requires_grad=True),
    lambda: tg.arange(3, requires_grad=True),
    lambda: tg.zeros(2, dtype=np.int64, requires_grad=True),
    lambda: Tensor(np.ones(2)).long().requires_grad_(),
], ids=["list", "bool", "arange", "zeros", "requires_grad_"])
def test_integer_tensors_cannot_require_grad(make):
    with pytest.raises(TypeError, match="floating-point"):
        make()


# ============================================================================ repeated indices
def test_repeated_indices_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3, 0, 1, 0])
    m = Tensor(np.ones((2, 3)), requires_grad=True)
    (m[:, np.array([1, 1])] * 2).sum().backward()
    np.testing.assert_array_equal(m.grad.numpy(), [[0, 4, 0], [0, 4, 0]])
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    F.embedding(np.array([[2, 2], [2, 0]]), w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1], [0, 0], [3, 3]])


# ============================================================================ dropout
def test_dropout_scales_kept_elements_and_gradient_is_the_mask():
    p = 0.3
    tg.manual_seed(1)
    x = tg.randn(4000, requires_grad=True)
    y = F.dropout(x, p)
    assert y.dtype == np.float32
    kept = y.numpy() != 0
    assert 0.25 < 1 - kept.mean() < 0.35  # ~p of 4000 dropped; 5 sigma is about +-0.036
    np.testing.assert_allclose(y.numpy()[kept], x.numpy()[kept] / (1 - p), rtol=1e-6)
    y.backward(np.ones(y.shape, np.float32))
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p), rtol=1e-6)


def test_dropout_identity_cases():
    x = Tensor(np.arange(5.0), requires_grad=True)
    for y in (F.dropout(x, 0.0), F.dropout(x, 0.7, training=False)):
        np.testing.assert_array_equal(y.numpy(), x.numpy())
    assert np.all(F.dropout(x, 1.0).numpy() == 0)
    with pytest.raises(ValueError, match="p must be"):
        F.dropout(x, 1.5)


def test_dropout_is_reproducible_under_manual_seed():
    x = tg.ones(64, 8)
    tg.manual_seed(123)
    a = F.dropout(x, 0.5).numpy()
    tg.manual_seed(123)
    b = F.dropout(x, 0.5).numpy()
    tg.manual_seed(124)
    c = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    tg.manual_seed(7)
    r1 = tg.randn(5).numpy()
    tg.manual_seed(7)
    np.testing.assert_array_equal(r1, tg.randn(5).numpy())


# ============================================================================ stability
LARGE = np.concatenate([np.linspace(-1e3, 1e3, 41), [-89.0, -88.0, 88.0, 89.0, -710.0, 710.0, 0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = Tensor(LARGE.astype(dtype), requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow on the way either
        y = x.sigmoid()
        y.backward(np.ones(y.shape, dtype))
    ref = scipy.special.expit(LARGE)
    assert y.dtype == dtype and np.all(np.isfinite(y.numpy()))
    # below the smallest normal number precision runs out, hence atol=tiny
    np.testing.assert_allclose(y.numpy(), ref.astype(dtype), rtol=1e-6, atol=np.finfo(dtype).tiny)
    assert np.all(np.isfinite(x.grad.numpy()))
    # y * (1 - y) cannot resolve 1 - y below eps once y rounds to 1 (PyTorch's formula does the
    # same), so the derivative is held to eps relative to its peak of 1/4, not to its own size
    dref = (ref * scipy.special.expit(-LARGE)).astype(dtype)
    np.testing.assert_allclose(x.grad.numpy(), dref, rtol=1e-5, atol=np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_is_stable_for_large_logits(dtype):
    z = np.array([[1000.0, 999.0, -1000.0], [-1000.0, -1001.0, -1000.0]], dtype)
    shifted = z - z.max(axis=1, keepdims=True)  # the same math where exp cannot overflow
    lse = np.log(np.exp(shifted).sum(axis=1)) + z.max(axis=1)
    np.testing.assert_allclose(Tensor(z).logsumexp(1).numpy(), lse, rtol=1e-6)
    np.testing.assert_allclose(Tensor(z).softmax(1).numpy(), np_softmax(shifted, 1), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(Tensor(z).log_softmax(1).numpy(), z - lse[:, None], rtol=1e-5, atol=1e-3)
    logits = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(logits, np.array([2, 0]))
    loss.backward()
    np.testing.assert_allclose(loss.item(), np.mean([lse[0] - z[0, 2], lse[1] - z[1, 0]]), rtol=1e-5)
    assert np.all(np.isfinite(logits.grad.numpy()))


def test_split_round_trips_through_cat():
    for n in (0, 1, 5):
        x = Tensor(np.arange(float(n)), requires_grad=True)
        pieces = x.split(2)
        assert len(pieces) == max(1, -(-n // 2))
        tg.cat(pieces).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.ones(n))
