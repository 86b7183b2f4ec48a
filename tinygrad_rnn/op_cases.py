"""The inputs the op table (op_table.py) draws: value domains that keep away from each op's
kinks and poles, and hypothesis strategies for shapes (with broadcasting) and for the
shape-dependent arguments (dims, indices, targets). Needs hypothesis (the `test` extra): only
tests/test_ops.py and `tinygrad-rnn gradcheck` import it, through op_table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


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


@st.composite
def linear_case(draw, bias):
    """x (n, in), weight (out, in) and, with `bias`, bias (out,); sizes may be 0."""
    n, k, m = (draw(st.integers(0, 4)) for _ in range(3))
    return ((n, k), (m, k)) + (((m,),) if bias else ()), {}

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
