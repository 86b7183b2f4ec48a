"""`FastAccumulator`: the engine's Accumulator (autograd.py), summing the same shares faster.

The textbook rule allocates a new array for every sum and evaluates every lazy share
(fast/lazy.py) on arrival. This one
- adds in place into arrays it allocated itself (`owned`), never into an op's own array;
- adds `SliceGrad`/`ColumnGrad` into one buffer per tensor instead of materialising each;
- defers the shares that are sums over rows (`OuterGrad`, `RowSumGrad`, `ColumnGrad`,
  `RowsGrad`) and evaluates all of a tensor's at once, one GEMM or pass per run of joined rows
  (a weight used at T time steps: one GEMM instead of T), when the tensor is visited or once
  `OUTER_ROWS` rows are waiting, which bounds the memory the waiting factors hold;
- opens the walk's scope for the recurrent steps' gradient rows (`blocks.walk`).
The measured effect of each is in docs/fast.md.
"""
from __future__ import annotations

import numpy as np

from .. import autograd
from . import blocks
from .lazy import KINDS, ColumnGrad, OuterGrad, RowsGrad, RowSumGrad, SliceGrad, runs

_SCATTERED = (SliceGrad, ColumnGrad)  # shares added into a buffer the accumulator owns
_DEFERRED = (OuterGrad, RowSumGrad, ColumnGrad, RowsGrad)  # shares that are sums over rows

# The rows of deferred shares one tensor may have waiting before they are evaluated.
OUTER_ROWS = 4096
# Below this many weight elements a product whose `a` is not a gradient row is evaluated at
# once: stacking copies of them was 10% slower at H=64 while freed memory went back to the OS
# (page faults on the stacked copies), and has been neutral since fast.retain_freed_memory()
# (docs/speed.md).
OUTER_MIN_SIZE = 128 * 128


class FastAccumulator(autograd.Accumulator):

    def __init__(self):
        super().__init__()
        self.owned = set()  # ids whose gradient array this accumulator allocated and may update in place
        self.deferred = {}  # id -> the deferred shares waiting to be summed at once
        self.scope = blocks.walk()

    def __enter__(self):
        self.scope.__enter__()  # the recurrent steps' gradient rows are this walk's (blocks.grad_row)
        return self

    def __exit__(self, *exc):
        return self.scope.__exit__(*exc)

    def add(self, t, share) -> None:
        k = id(t)
        kind = type(share)
        if kind is np.ndarray or kind not in KINDS:  # an array: the most common kind, tested first
            if share.shape != t._data.shape:
                share = autograd.sum_to(share, t._data.shape)
            self._add_dense(k, share)
        elif kind in _DEFERRED and (share.a_at is not None or kind is OuterGrad and
                                    share.a.shape[1] * share.b.shape[1] >= OUTER_MIN_SIZE):
            waiting = self.deferred.get(k)
            if waiting is None:
                waiting = self.deferred[k] = []
            waiting.append(share)
            rows = len(waiting) * share.a.shape[0] if kind is not RowsGrad else sum([p.a.shape[0] for p in waiting])
            if rows >= OUTER_ROWS:
                self._add_dense(k, self._evaluate(self.deferred.pop(k)), fresh=True)
        elif kind is OuterGrad or kind is RowSumGrad:
            self._add_dense(k, share.value(), fresh=True)
        else:  # _SCATTERED
            prev = self.grads.get(k)
            if k not in self.owned:  # a buffer we may write into: never an op's own array
                prev = share.zeros() if prev is None else np.array(prev)
                self.owned.add(k)
            share.add_into(prev)
            self.grads[k] = prev

    def value(self, t, keep: bool = False):
        k = id(t)
        if self.deferred:
            waiting = self.deferred.pop(k, None)
            if waiting:
                self._add_dense(k, self._evaluate(waiting), fresh=True)
        g = self.grads.pop(k, None)
        owned = k in self.owned
        self.owned.discard(k)
        return np.array(g) if keep and g is not None and not owned else g

    def finite(self, share) -> bool:
        """A lazy share is checked by its factors, not evaluated (a product that overflows from finite
        factors is not caught here; it shows as inf in the gradient)."""
        kind, finite = type(share), super().finite
        if kind is SliceGrad:
            return finite(share.values)
        if kind is OuterGrad:
            return finite(share.a) and finite(share.b)
        if kind in _DEFERRED:
            return finite(share.a)
        return finite(share)

    def _add_dense(self, k: int, share: np.ndarray, fresh: bool = False) -> None:
        """Sum `share` into tensor k's gradient, in place when this accumulator owns it.
        `fresh`: share was allocated for this sum alone, so later sums may write into it."""
        prev = self.grads.get(k)
        if prev is None:
            self.grads[k] = share
            if fresh:
                self.owned.add(k)
        elif k in self.owned:
            prev += share
        else:
            total = prev + share
            self.grads[k] = total if type(total) is np.ndarray else np.asarray(total)  # 0-d sums come back as numpy scalars
            self.owned.add(k)

    def _evaluate(self, waiting: list) -> np.ndarray:
        """The sum of the shares waiting for one tensor: one evaluation per run of joined rows."""
        total = None
        for run in runs(waiting):
            part = type(run[0]).evaluate(run)
            total = part if total is None else np.add(total, part, out=total)
        return total
