"""PyTorch-style `nn.functional`: the stateless neural-network ops.

`nll_loss` and `mse_loss` are composed from existing ops, so their gradients come from the
graph like everything else. `linear` on a batch of rows is one node (ops/matmul.py `Linear`)
with the same arithmetic as its three ops; other shapes go through `@` and `+`."""
import numpy as np

from ..functional import (  # noqa: F401
    cross_entropy,
    dropout,
    embedding,
    log_softmax,
    one_hot,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from ..ops import matmul as _M
from ..tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input @ weight.T + bias, with weight (out_features, in_features) as in PyTorch."""
    if input.ndim > 2:  # fold leading dims into one batch: a single 2-D matmul, not a batched one
        lead = input.shape[:-1]
        return linear(input.reshape(-1, input.shape[-1]), weight, bias).reshape(*lead, weight.shape[0])
    if input.ndim == 2 and weight.ndim == 2:
        return _M.Linear.apply(input, weight, bias)
    out = input @ weight.T
    return out if bias is None else out + bias


def nll_loss(input: Tensor, target, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """-input[n, target[n]], for `input` holding log-probabilities: (N, C), (C,) or (N, C, d1, ...).

    Targets equal to `ignore_index` add nothing and do not count in the mean, as in PyTorch
    (so `nll_loss(log_softmax(x), t) == cross_entropy(x, t)`)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"nll_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if input.dtype.kind != "f":  # PyTorch refuses too; an integer mean would be a float64 surprise
        raise TypeError(f"nll_loss: input must hold floating-point log-probabilities, got dtype {input.dtype}")
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: target must hold integer class indices, got dtype {t.dtype}")
    class_dim = 0 if input.ndim == 1 else 1
    n_classes = input.shape[class_dim]
    expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
    if t.shape != expected:
        raise ValueError(f"nll_loss: target of shape {t.shape} does not match input of shape "
                         f"{input.shape} (expected {expected})")
    rows = input.unsqueeze(0) if input.ndim == 1 else input
    if rows.ndim > 2:  # (N, C, d1, ...) -> (N, d1, ..., C): classes last, one row per prediction
        rows = rows.permute(0, *range(2, rows.ndim), 1)
    rows = rows.reshape(-1, n_classes)
    flat = t.reshape(-1).astype(np.int64)
    keep = flat != ignore_index
    bad = keep & ((flat < 0) | (flat >= n_classes))
    if bad.any():
        raise IndexError(f"nll_loss: target {flat[bad][0]} is out of range for {n_classes} classes")
    picked = rows[np.arange(len(flat)), np.where(keep, flat, 0)]
    losses = picked * -keep.astype(input.dtype)
    if reduction == "none":
        return losses.reshape(t.shape)
    total = losses.sum()
    return total if reduction == "sum" else total / float(keep.sum())


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """(input - target)^2, averaged, summed or per element. Shapes must match exactly: PyTorch
    broadcasts with a warning, which almost always hides a bug, so this raises instead."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=input.dtype))
    if target.shape != input.shape:
        raise ValueError(f"mse_loss: target shape {target.shape} differs from input shape {input.shape}")
    diff = input - target
    sq = diff * diff
    if reduction == "none":
        return sq
    return sq.sum() if reduction == "sum" else sq.mean()
