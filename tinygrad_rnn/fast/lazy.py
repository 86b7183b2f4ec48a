"""Lazy gradient shares: what an op sends back when evaluating the share at once would waste
work the walk can save. Each is a share in the engine's sense (autograd.Accumulator): an
object with `.value()`, the array it stands for, so the textbook accumulator can sum it like
any other. `fast.accumulate.FastAccumulator` knows the kinds and does better:

- `SliceGrad` (x[index]'s share to x): zero except at `index`. Added into one buffer per
  input instead of materialised: reading a length-T sequence step by step would otherwise
  cost T zero arrays of the whole sequence's size, O(T^2).
- `ColumnGrad` (a product with one-hot rows given as token ids, to its weight): a scatter of
  a's rows into the columns the ids pick, into one Fortran-ordered buffer per weight.
- `OuterGrad` (x @ W's share to W, `a.T @ b`): a recurrent weight gets one per time step; the
  walk stacks the factors of all of them and does one GEMM (T=64, B=32, H=1024: 53 -> 21 ms).
- `RowSumGrad` (a bias added to every row of `a`): `a.sum(0)`, summed over steps in one pass.
- `RowsGrad`: a run of consecutive recurrent steps' share to one weight as one object (see
  fast/steps.py and fast/blocks.py).

`a_at` (twin, t) marks an `a` that is row t of a walk's gradient twin (blocks.grad_row) and
`b_at` (block, t) a `b` that may be row t of a block of states: rows t, t - 1, ... of one
twin or block join as a view instead of a copy (`a_rows`, `b_rows`).
"""
from __future__ import annotations

import numpy as np

from ..kernels import K
from . import blocks


class SliceGrad:
    """A gradient that is zero except at `index`, where it is `values`."""

    __slots__ = ("shape", "dtype", "index", "values", "basic")

    def __init__(self, shape, dtype, index, values, basic: bool):
        self.shape, self.dtype, self.index, self.values, self.basic = shape, dtype, index, values, basic

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype)

    def add_into(self, buf: np.ndarray) -> None:
        if self.basic:
            buf[self.index] += self.values  # a basic index never repeats an element
        else:
            np.add.at(buf, self.index, self.values)  # integer arrays may repeat: accumulate

    def value(self) -> np.ndarray:
        buf = self.zeros()
        self.add_into(buf)
        return buf


class ColumnGrad:
    """`a.T @ one_hot(ids)` for a weight of `shape` (H, I): row b of `a` (B, H) lands in
    column ids[b]."""

    __slots__ = ("shape", "dtype", "ids", "a", "a_at")

    def __init__(self, shape, ids: np.ndarray, a: np.ndarray, a_at: tuple = None):
        self.shape, self.dtype, self.ids, self.a, self.a_at = shape, a.dtype, ids, a, a_at

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype, order="F")  # so each row of a adds into contiguous memory

    def add_into(self, buf: np.ndarray) -> None:
        K.scatter_add_rows_into(buf.T, self.ids, self.a)

    def value(self) -> np.ndarray:
        return columns(self.shape, self.ids, self.a)

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        return columns(run[0].shape, np.concatenate([p.ids for p in reversed(run)]), a_rows(run))


def columns(shape: tuple, ids: np.ndarray, a: np.ndarray) -> np.ndarray:
    """a.T @ one_hot(ids) as a new Fortran-ordered array of `shape`."""
    buf = np.zeros(shape, a.dtype, order="F")
    K.scatter_add_rows_into(buf.T, ids, a)
    return buf


class RowSumGrad:
    """`a.sum(0)`. A recurrent step hands one object to both its biases; each sums it."""

    __slots__ = ("a", "a_at")

    def __init__(self, a: np.ndarray, a_at: tuple = None):
        self.a, self.a_at = a, a_at

    def value(self) -> np.ndarray:
        return K.sum_rows(self.a)

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        return K.sum_rows(a_rows(run))


class OuterGrad:
    """`a.T @ b`, what `x @ W` sends back to W, left unevaluated."""

    __slots__ = ("a", "b", "a_at", "b_at")

    def __init__(self, a: np.ndarray, b: np.ndarray, b_at: tuple = None, a_at: tuple = None):
        self.a, self.b, self.a_at, self.b_at = a, b, a_at, b_at

    def value(self) -> np.ndarray:
        return K.matmul(self.a.T, self.b)

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        return K.matmul(a_rows(run).T, b_rows(run))


class RowsGrad:
    """What a run of consecutive recurrent steps sends one weight, as one gradient: rows
    t0..t1 of a walk's gradient twin (the steps' dL/dpre, `blocks.grad_row`), summed over the
    steps against what the weight met in forward. `how` says what that was:

    OUTER    (W_hh) a.T @ states[t0 - 1:t1], each step's input state, rows of `states` (a block);
    COLUMNS  (W_ih fed token ids) a's rows scattered into the columns `ids` picked, as ColumnGrad;
    ROWSUM   (the biases, one run for both) a.sum(0).

    A recurrent step's backward (fast/steps.py) makes one when the walk reaches the last step
    of a run and extends it (t0 -= 1) at each step before, sending that step's weights no
    gradient of their own. `open` stays True until it is evaluated; only then are its rows
    final, so the op extends only open runs. `weight` keeps runs of two weights apart: the
    pair of Tensors the run belongs to, (W, None) for a weight, (b_ih, b_hh) for the biases
    with None for one a step does not need. `a_at` is (twin, t1)."""

    OUTER, COLUMNS, ROWSUM = 0, 1, 2
    __slots__ = ("how", "weight", "twin", "t0", "t1", "states", "ids", "shape", "open", "a_at")

    def __init__(self, how: int, weight, at: tuple, states=None, ids=None, shape=None):
        self.how, self.weight, self.states, self.shape = how, weight, states, shape
        self.twin, self.t1 = at
        self.t0, self.a_at, self.open = self.t1, at, True
        self.ids = None if ids is None else [ids]  # the newest step's first, as they arrive

    @property
    def a(self) -> np.ndarray:
        return self.twin[self.t0:self.t1 + 1].reshape(-1, self.twin.shape[-1])

    def value(self) -> np.ndarray:
        return RowsGrad.evaluate([self])

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        (p,) = run  # never joined with another (runs)
        p.open = False
        a = p.a
        if p.how == RowsGrad.OUTER:
            return K.matmul(a.T, p.states[p.t0 - 1:p.t1].reshape(-1, a.shape[1]))
        if p.how == RowsGrad.COLUMNS:
            return columns(p.shape, np.concatenate(p.ids[::-1]), a)
        return K.sum_rows(a)


KINDS = (SliceGrad, ColumnGrad, RowSumGrad, OuterGrad, RowsGrad)


def joins(prev, at) -> bool:
    """Rows at `prev` and then `at` join as a view (`at` is the row before `prev` in one twin
    or block: the walk goes back in time), or as a copy (neither is such a row)."""
    if at is None or prev is None:
        return at is None and prev is None
    return at[0] is prev[0] and at[1] == prev[1] - 1


def runs(waiting: list) -> list:
    """The waiting gradients split where the kind changes or where their rows stop joining: a
    first step's state, a new block. (One gradient row may also reach two inputs that are one
    tensor, e.g. w_ih and w_hh both x: the same t twice is no join.)"""
    out, run = [], [waiting[0]]
    for p in waiting[1:]:
        q = run[-1]
        if type(p) is not type(q) or type(p) is RowsGrad or not joins(q.a_at, p.a_at) or (
                type(p) is OuterGrad and not joins(q.b_at, p.b_at)):
            out.append(run)
            run = []
        run.append(p)
    out.append(run)
    return out


def a_rows(run: list) -> np.ndarray:
    """The a factors of a run, in time order, as one 2-D array: a view of their twin when they
    are its rows (then they follow each other, see runs), else a copy."""
    at = run[0].a_at
    if len(run) == 1:
        return run[0].a
    if at is None:
        return np.concatenate([p.a for p in reversed(run)])
    twin, t = at
    return twin[t - len(run) + 1:t + 1].reshape(-1, twin.shape[-1])


def b_rows(run: list) -> np.ndarray:
    """The b factors of a run joined as one 2-D view of their block, or a copy when they are not
    (any more) the rows handed out there."""
    if len(run) == 1:
        return run[0].b
    if run[0].b_at is None:
        return np.concatenate([p.b for p in reversed(run)])
    block, t = run[0].b_at
    joined = blocks.run([p.b for p in reversed(run)], block, t - len(run) + 1)
    if joined is None:
        return np.concatenate([p.b for p in reversed(run)])
    return joined.reshape(-1, joined.shape[-1])
