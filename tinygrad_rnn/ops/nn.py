"""Softmax, log-softmax, the fused cross-entropy and the embedding gather.

The row kernels want (rows, classes) C-contiguous arrays, so `dim` is moved last first."""
import math

import numpy as np

from ..autograd import Function
from ..kernels import K


def _rows(x, dim):
    """x with `dim` moved last, as C-contiguous (rows, n); plus what is needed to undo it."""
    if x.ndim == 0:  # one row of one class, as PyTorch treats a 0-d input
        return x.reshape(1, 1), ()
    if x.ndim == 2 and dim in (1, -1) and x.flags.c_contiguous:  # already (rows, n)
        return x, x.shape
    moved = np.moveaxis(x, dim, -1)
    # the row count spelled out: reshape(-1, 0) of an empty axis cannot infer it
    return np.ascontiguousarray(moved).reshape(math.prod(moved.shape[:-1]), x.shape[dim]), moved.shape


def _unrows(rows, moved_shape, dim):
    if moved_shape == ():
        return rows.reshape(())
    out = rows.reshape(moved_shape)
    # moveaxis costs ~5 µs of Python; the class dim already last (logits (N, C)) needs no move
    return out if dim in (-1, len(moved_shape) - 1) else np.moveaxis(out, -1, dim)


def _check_floating(op, a):
    # PyTorch refuses too; numpy would compute in float64 on one backend and fail on the other
    if a.dtype.kind != "f":
        raise TypeError(f"{op} needs a floating-point tensor, got {a.dtype}; cast it with .float()")


class Softmax(Function):
    def forward(self, a, dim):
        _check_floating("softmax", a)
        rows, moved = _rows(a, dim)
        y = K.softmax_lastdim(rows)
        self.saved = (y, moved, dim)
        return _unrows(y, moved, dim)

    def backward(self, g):
        y, moved, dim = self.saved
        return _unrows(K.softmax_backward(_rows(g, dim)[0], y), moved, dim)


class LogSoftmax(Function):
    def forward(self, a, dim):
        _check_floating("log_softmax", a)
        rows, moved = _rows(a, dim)
        y = K.log_softmax_lastdim(rows)
        self.saved = (y, moved, dim)
        return _unrows(y, moved, dim)

    def backward(self, g):
        y, moved, dim = self.saved
        return _unrows(K.log_softmax_backward(_rows(g, dim)[0], y), moved, dim)


class CrossEntropy(Function):
    """-log softmax(logits)[target], fused: one pass forward, one pass backward.

    logits (N, C), (C,) or (N, C, d1, ...); targets of the logits' shape without C, integer
    class indices. Rows whose target equals `ignore_index` add nothing and do not count in
    the mean, as in PyTorch.
    """

    def forward(self, logits, targets, reduction, ignore_index):
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        _check_floating("cross_entropy", logits)
        if logits.ndim == 0:
            raise ValueError("logits need a class dimension, got a 0-d tensor")
        targets = np.asarray(targets)
        if targets.dtype.kind not in "iu":
            raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
        class_dim = 0 if logits.ndim == 1 else 1
        expected = logits.shape[:class_dim] + logits.shape[class_dim + 1:]
        if targets.shape != expected:
            raise ValueError(f"targets of shape {targets.shape} do not match logits of shape "
                             f"{logits.shape} (expected targets of shape {expected})")
        n_classes = logits.shape[class_dim]
        flat_t = targets.reshape(-1).astype(np.int64)
        keep = flat_t != ignore_index
        if flat_t.size and (flat_t.min() < 0 or flat_t.max() >= n_classes):  # then look closer
            bad = keep & ((flat_t < 0) | (flat_t >= n_classes))
            if bad.any():
                pos = int(np.argmax(bad))
                raise IndexError(f"target {flat_t[pos]} at position {np.unravel_index(pos, targets.shape)} "
                                 f"is out of range for {n_classes} classes")
        rows, moved = _rows(logits, class_dim)
        losses, e, s = K.cross_entropy_forward(rows, flat_t, ignore_index)
        count = int(np.count_nonzero(keep))
        self.saved = (e, s, flat_t, ignore_index, moved, class_dim, reduction, count)
        if reduction == "none":
            return losses.reshape(targets.shape)
        total = np.sum(losses)
        return total if reduction == "sum" else total / np.asarray(count, dtype=logits.dtype)

    def backward(self, g):
        e, s, flat_t, ignore_index, moved, class_dim, reduction, count = self.saved
        if reduction == "none":
            g_rows = np.ascontiguousarray(g.reshape(-1))
        else:
            scale = g / count if reduction == "mean" else g
            g_rows = np.empty(len(flat_t), e.dtype)
            g_rows.fill(scale)  # np.full's Python wrapper cost 2 µs more
        grad = K.cross_entropy_backward(g_rows, e, s, flat_t, ignore_index)
        return _unrows(grad, moved, class_dim)


class Embedding(Function):
    """weight[indices]: gathers rows; backward scatter-adds into a zero (num, dim) gradient."""

    def forward(self, weight, indices):
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
        if weight.ndim != 2:
            raise ValueError(f"weight must be 2-D (num_embeddings, dim), got shape {weight.shape}")
        # a copy: backward's numba scatter trusts these indices, so the caller's array may not
        # change them after this check
        flat = np.array(indices.reshape(-1), dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= weight.shape[0]):
            bad = flat[(flat < 0) | (flat >= weight.shape[0])][0]
            raise IndexError(f"index {bad} is out of range for {weight.shape[0]} embeddings")
        self.saved = (flat, weight.shape[0])
        out = K.gather_rows(np.ascontiguousarray(weight), flat)
        return out.reshape(indices.shape + (weight.shape[1],))

    def backward(self, g):
        flat, num = self.saved
        g2 = np.ascontiguousarray(g).reshape(len(flat), g.shape[-1])  # -1 fails on empty g
        return K.scatter_add_rows(g2, flat, num), None
