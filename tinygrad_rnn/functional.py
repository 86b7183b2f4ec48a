"""Functions on tensors that are not methods: where, cat, stack, maximum, ... and the nn math.

`tinygrad_rnn.nn.functional` re-exports the nn part under PyTorch's names."""
from __future__ import annotations

import numpy as np

from . import rng
from .ops import elementwise as _E
from .ops import movement as _V
from .ops import nn as _N
from .tensor import Tensor, _norm_dim, _operand


def _tensors(seq, op):
    seq = list(seq)
    if not seq:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    return [t if isinstance(t, Tensor) else Tensor(t) for t in seq]


def cat(tensors, dim=0) -> Tensor:
    ts = _tensors(tensors, "cat")
    for i, t in enumerate(ts):
        if t.ndim == 0:
            raise ValueError(f"cat: zero-dimensional tensor (at position {i}) cannot be concatenated; use stack")
    return _V.Cat.apply(*ts, dim=_norm_dim(dim, ts[0].ndim, "cat"))


concatenate = cat


def stack(tensors, dim=0) -> Tensor:
    """Tensors of one shape joined along a new axis `dim`, into a new array (as PyTorch's)."""
    ts = _tensors(tensors, "stack")
    return _V.Stack.apply(*ts, dim=_norm_dim(dim, ts[0].ndim + 1, "stack"))


def where(condition, a, b) -> Tensor:
    """Elements of `a` where `condition` holds, of `b` elsewhere (numbers take the other side's dtype)."""
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = Tensor(a)
    like = a if isinstance(a, Tensor) else b
    return _E.Where.apply(_operand(a, like), _operand(b, like), cond=cond)


def maximum(a, b) -> Tensor:
    if isinstance(b, Tensor) and not isinstance(a, Tensor):
        return _E.Maximum.apply(_operand(a, b), b)  # a number on the left takes b's dtype too
    return _as_tensor(a).maximum(b)


def minimum(a, b) -> Tensor:
    if isinstance(b, Tensor) and not isinstance(a, Tensor):
        return _E.Minimum.apply(_operand(a, b), b)
    return _as_tensor(a).minimum(b)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# elementwise functions in their module form, as in `torch.tanh(x)`
def exp(x): return _as_tensor(x).exp()
def log(x): return _as_tensor(x).log()
def sqrt(x): return _as_tensor(x).sqrt()
def tanh(x): return _as_tensor(x).tanh()
def sigmoid(x): return _as_tensor(x).sigmoid()
def relu(x): return _as_tensor(x).relu()
def clamp(x, min=None, max=None): return _as_tensor(x).clamp(min, max)
def softmax(x, dim=-1): return _as_tensor(x).softmax(dim)
def log_softmax(x, dim=-1): return _as_tensor(x).log_softmax(dim)
def matmul(a, b): return _as_tensor(a) @ b


def cross_entropy(input: Tensor, target, *, reduction: str = "mean", ignore_index: int = -100) -> Tensor:
    """Mean (or sum, or per-element) of -log softmax(input)[target], as one fused, stable op.

    `target` holds integer class indices; `input` (logits) is (N, C), (C,) or (N, C, d1, ...).
    `reduction` and `ignore_index` are keyword-only: PyTorch's third positional argument is a
    class-weight tensor, which this op does not take."""
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    return _N.CrossEntropy.apply(input, targets=t, reduction=reduction, ignore_index=ignore_index)


def embedding(input, weight: Tensor) -> Tensor:
    """Rows of `weight` picked by the integer `input` (any shape): shape input.shape + (dim,).

    PyTorch's argument order (indices first). Same math as one_hot(input) @ weight, without
    building the one-hot matrix; backward scatter-adds, so a row picked twice gets both grads."""
    return _N.Embedding.apply(weight, input)


def one_hot(indices, num_classes: int = -1, dtype=np.float32) -> Tensor:
    """(…, num_classes) one-hot rows; float32 by default so it can feed a matmul directly."""
    idx = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, got dtype {idx.dtype}")
    if num_classes < 0:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise IndexError(f"one_hot: index {int(idx.max() if idx.max() >= num_classes else idx.min())} "
                         f"is out of range for {num_classes} classes")
    out = np.zeros(idx.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, idx[..., None].astype(np.int64), 1, axis=-1)
    return Tensor(out)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if x.dtype.kind != "f":  # the 1/(1-p) scale would be cut to an integer (1 for p = 0.3)
        raise TypeError(f"dropout: needs a floating-point tensor, got {x.dtype}; cast it with .float()")
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    keep = rng.generator().random(x.shape) >= p
    mask = keep.astype(x.dtype) * np.asarray(1 / (1 - p), dtype=x.dtype)
    return _E.Mul.apply(x, mask)
