"""Gradient clipping, the standard cure for exploding gradients in RNNs (Pascanu et al., 2013)."""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor


def _grads(parameters) -> list:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad.data for p in params if p.grad is not None]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients by one factor so that their *global* norm is at most `max_norm`.

    The norm is taken over every gradient at once, as if they were one long vector, so the
    direction of the update is kept. Returns that total norm (before clipping) as a Tensor.
    """
    grads = _grads(parameters)
    if not grads:
        return Tensor(np.zeros((), np.float32))
    norm_type = float(norm_type)
    # per-array norms first (one fast BLAS-backed pass each), then the norm of those norms
    norms = np.array([np.linalg.norm(g.reshape(-1), norm_type) for g in grads], np.float64)
    total = float(np.linalg.norm(norms, norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is "
                           f"non-finite, so it cannot be clipped. To disable this error and scale the "
                           f"gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1:  # also true for a NaN norm: then, as in PyTorch, the NaN spreads to the grads
        for g in grads:
            g *= g.dtype.type(coef)
    return Tensor(np.asarray(total, grads[0].dtype))


def clip_grad_value_(parameters, clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value] (min-char-rnn clips at 5)."""
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)


def functional_call(module, parameters: dict, args=(), kwargs=None):
    """`module(*args, **kwargs)` with some parameters swapped for the given tensors, by name.

    The swap is temporary and bypasses registration, so any tensor works: this is how
    `gradcheck` (which needs the parameters as explicit inputs) checks a whole module:
    `gradcheck(lambda x, w: functional_call(cell, {"weight_hh": w}, (x,)), (x, w))`.
    """
    args = args if isinstance(args, tuple) else (args,)
    swapped = []
    try:
        for name, tensor in parameters.items():
            owner = module
            *path, attr = name.split(".")
            for part in path:
                owner = owner._modules[part]
            swapped.append((owner, attr, owner.__dict__[attr]))
            object.__setattr__(owner, attr, tensor)
        return module(*args, **(kwargs or {}))
    finally:
        for owner, attr, original in reversed(swapped):
            object.__setattr__(owner, attr, original)
