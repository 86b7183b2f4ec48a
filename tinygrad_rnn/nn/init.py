"""In-place initialisers with PyTorch's names. They all draw from `tinygrad_rnn.rng.generator()`,
so `tinygrad_rnn.manual_seed(n)` makes a model's initial weights reproducible, and they write
into `tensor.data` directly: initialisation is not part of any graph."""
from __future__ import annotations

import math

import numpy as np

from .. import rng


def _fill(tensor, values):
    tensor.data[...] = values  # cast to the tensor's own dtype on the way in
    tensor._mark_modified()
    return tensor


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    return _fill(tensor, rng.generator().uniform(a, b, tensor.shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    return _fill(tensor, rng.generator().normal(mean, std, tensor.shape))


def constant_(tensor, val: float):
    return _fill(tensor, val)


def zeros_(tensor):
    return _fill(tensor, 0)


def ones_(tensor):
    return _fill(tensor, 1)


def _calculate_fan_in_and_fan_out(tensor):
    if tensor.ndim < 2:
        raise ValueError("fan in and fan out need a tensor with at least 2 dimensions")
    receptive = int(np.prod(tensor.shape[2:]))  # 1 for a matrix; the kernel size for a conv
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def xavier_uniform_(tensor, gain: float = 1.0):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a)


def orthogonal_(tensor, gain: float = 1.0):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one (Saxe et al.).

    For recurrent weights: every singular value is 1, so repeated multiplication by W_hh
    neither explodes nor vanishes at initialisation.
    """
    if tensor.ndim < 2:
        raise ValueError("orthogonal_ needs a tensor with at least 2 dimensions")
    rows = tensor.shape[0]
    cols = tensor.data.size // rows
    a = rng.generator().standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # makes the result uniformly distributed (Mezzadri, 2007)
    if rows < cols:
        q = q.T
    return _fill(tensor, gain * q.reshape(tensor.shape))
