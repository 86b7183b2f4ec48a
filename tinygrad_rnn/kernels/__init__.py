"""Kernels: pure functions on numpy arrays, no Tensor in sight.

Each kernel module pairs a fast kernel `foo` (usually numba `@njit(cache=True)`) with its plain
numpy reference `foo_ref`, written beside it. Ops call kernels through `K.foo`, and `K` points
at one backend:

- ``numba`` (default): the fast kernels. Where a measurement showed numpy itself is the fast
  path (BLAS matmul, numpy's SIMD `tanh`/`exp`), the fast name is bound to the reference and a
  comment says so.
- ``numpy``: every reference, so any result can be cross-checked against plain numpy.

Choose with the environment variable ``TINYGRAD_RNN_BACKEND=numpy`` or `set_backend("numpy")`.

numba has no float16 type, while PyTorch computes float16 on the CPU too. So every fast kernel
that would reach numba first checks for float16 arrays (one dtype comparison, tens of ns) and
hands them to its reference: float16 works on both backends and gives the same numbers.
Nothing is imported or compiled until the first kernel call, so `import tinygrad_rnn` stays fast
(tests/test_import.py). The numpy backend compiles nothing, but loading the kernel modules
still imports numba (~130-190 ms), since each module defines its pairs with `@njit`.
"""
from __future__ import annotations

import importlib
import os

_MODULES = ("elementwise", "matmul", "reduce", "nn", "optim", "gates")
BACKENDS = ("numba", "numpy")


def _pairs() -> dict:
    """{name: (fast, reference)} for every kernel in every kernel module."""
    pairs = {}
    for modname in _MODULES:
        mod = importlib.import_module(f"{__name__}.{modname}")
        for attr, ref in vars(mod).items():
            if attr.endswith("_ref") and callable(ref):
                name = attr[: -len("_ref")]
                fast = getattr(mod, name, None)
                if fast is None:
                    raise ImportError(f"kernel module {modname}: {attr} has no fast twin {name}")
                pairs[name] = (fast, ref)
    return pairs


class _Kernels:
    """Namespace of the active backend's kernels; filled on first use."""

    def __init__(self):
        self._backend = None

    def __getattr__(self, name):
        # only reached for names not yet bound: load the backend, then retry once
        if name.startswith("_") or self._backend is not None:
            raise AttributeError(f"no kernel named {name!r}")
        self._load(os.environ.get("TINYGRAD_RNN_BACKEND", "numba"))
        return getattr(self, name)

    def _load(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        which = 0 if backend == "numba" else 1
        for name, pair in _pairs().items():
            setattr(self, name, pair[which])
        self._backend = backend


K = _Kernels()


def set_backend(name: str) -> None:
    """Run every op on `name`'s kernels from now on ("numba" or "numpy")."""
    K._load(name)


def get_backend() -> str:
    if K._backend is None:
        K._load(os.environ.get("TINYGRAD_RNN_BACKEND", "numba"))
    return K._backend


def kernel_pairs() -> dict:
    """{name: (fast, reference)}: what the kernel tests compare."""
    return _pairs()
