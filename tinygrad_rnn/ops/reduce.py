"""Reductions over `dims` (a sorted tuple of axes). Backward broadcasts the gradient back over
the reduced axes; a broadcast view costs no memory."""
import math

import numpy as np

from ..autograd import Function
from ..kernels import K
from .elementwise import floating


def _kept_shape(shape, dims):
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def _reduced_shape(shape, dims, keepdim):
    if keepdim:
        return _kept_shape(shape, dims)
    return tuple(n for i, n in enumerate(shape) if i not in dims)


def _expand_back(g, shape, dims):
    """Gradient of a reduction: the output gradient broadcast over the reduced axes."""
    return np.broadcast_to(g.reshape(_kept_shape(shape, dims)), shape)


def _as_rows(x, dims):
    """Move `dims` last and flatten: (rows, reduced) C-contiguous, what the row kernels take."""
    keep = tuple(i for i in range(x.ndim) if i not in dims)
    perm = keep + dims
    # both counts spelled out: reshape(-1, 0) of an empty reduction cannot infer the rows
    shape = (math.prod(x.shape[d] for d in keep), math.prod(x.shape[d] for d in dims))
    rows = np.ascontiguousarray(x.transpose(perm)).reshape(shape)
    return rows, perm


def _from_rows(rows, shape, perm):
    """Inverse of `_as_rows`."""
    return rows.reshape([shape[p] for p in perm]).transpose(np.argsort(perm))


class Sum(Function):
    def forward(self, a, dims, keepdim):
        self.saved = (a.shape, dims)
        return np.sum(a, axis=dims, keepdims=keepdim)

    def backward(self, g):
        shape, dims = self.saved
        return _expand_back(g, shape, dims)


class Mean(Function):
    def forward(self, a, dims, keepdim):
        self.saved = (a.shape, dims)
        return np.mean(a, axis=dims, keepdims=keepdim)

    def backward(self, g):
        shape, dims = self.saved
        count = int(np.prod([shape[d] for d in dims]))
        return _expand_back(g / count, shape, dims)


class Var(Function):
    """sum((x - mean)^2) / (N - correction) over dims. With N <= correction the divisor is 0
    (PyTorch's rule: no degrees of freedom left): the result is nan, or inf where the elements
    differ, and the gradients 2 (x - mean) / 0 are nan or +-inf; Tensor.var warns."""

    def forward(self, a, dims, keepdim, correction):
        n = math.prod(a.shape[d] for d in dims)
        dof = max(n - correction, 0)
        # an empty reduction has no mean (numpy would warn): its sum of squares is 0 all the same
        diff = a - np.mean(a, axis=dims, keepdims=True) if n else a
        self.saved = (diff, dims, dof)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(diff * diff, axis=dims, keepdims=keepdim) / dof

    def backward(self, g):
        diff, dims, dof = self.saved
        with np.errstate(invalid="ignore"):  # g * inf * 0 is nan, as it should be
            return _expand_back(g, diff.shape, dims) * (2 / dof if dof else math.inf) * diff


class LogSumExp(Function):
    def forward(self, a, dims, keepdim):
        rows, _ = _as_rows(floating(a), dims)
        out = K.logsumexp_lastdim(rows).reshape(_reduced_shape(a.shape, dims, keepdim))
        self.saved = (a, dims, out)
        return out

    def backward(self, g):
        a, dims, out = self.saved
        kept = _kept_shape(a.shape, dims)
        # an all -inf row has lse -inf; shifting by 0 there gives exp(-inf) = 0, not -inf - -inf = NaN
        shift = np.where(np.isneginf(out), 0, out).reshape(kept)
        return g.reshape(kept) * np.exp(a - shift)  # g * softmax(a) over dims


class Max(Function):
    """Largest element over dims; the gradient goes to its first occurrence only."""

    sign = 1

    def forward(self, a, dims, keepdim):
        if any(a.shape[d] == 0 for d in dims):
            raise ValueError(f"cannot reduce over an empty dimension (shape {a.shape}, dims {dims})")
        rows, perm = _as_rows(a if self.sign == 1 else -a, dims)
        vals, idx = K.max_lastdim(rows)
        self.saved = (a.shape, rows.shape, perm, idx)
        return (self.sign * vals).astype(a.dtype).reshape(_reduced_shape(a.shape, dims, keepdim))

    def backward(self, g):
        shape, rows_shape, perm, idx = self.saved
        grad_rows = np.zeros(rows_shape, dtype=g.dtype)
        grad_rows[np.arange(rows_shape[0]), idx] = g.reshape(-1)
        return _from_rows(grad_rows, shape, perm)


class Min(Max):
    """Smallest element: the max of -x, negated back; same first-occurrence tie rule."""

    sign = -1
