"""Tensor factories with PyTorch's names and defaults: `zeros`, `ones`, `full`, `eye`, `arange`,
`randn`, `rand` (drawn from `tg.manual_seed`'s generator), `*_like`, `tensor`."""
from __future__ import annotations

import numpy as np

from . import rng as _random
from ._args import _raw, _shape_arg
from .tensor import Tensor

def tensor(data, requires_grad=False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(_shape_arg(shape), dtype), requires_grad)


def ones(*shape, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(np.ones(_shape_arg(shape), dtype), requires_grad)


def full(shape, fill_value, dtype=np.float32, requires_grad=False) -> Tensor:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return Tensor(np.full(shape, fill_value, dtype), requires_grad)


def eye(n, m=None, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(np.eye(n, m, dtype=dtype), requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError(f"arange: step must be nonzero (start {start}, end {end})")
    arr = np.arange(start, end, step)
    if dtype is None:
        dtype = np.int64 if arr.dtype.kind in "iu" else np.float32
    return Tensor(arr.astype(dtype), requires_grad)


def randn(*shape, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(_random.generator().standard_normal(_shape_arg(shape)).astype(dtype), requires_grad)


def rand(*shape, dtype=np.float32, requires_grad=False) -> Tensor:
    return Tensor(_random.generator().random(_shape_arg(shape)).astype(dtype), requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.zeros_like(_raw(t), dtype=dtype), requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return Tensor(np.ones_like(_raw(t), dtype=dtype), requires_grad)
