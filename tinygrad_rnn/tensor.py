"""Tensor: a numpy array plus what autograd needs (`grad`, `requires_grad`, the op that made it).

Every method here is a thin door into an op in `ops/`; the math lives there, forward and
backward side by side. The graph is recorded by `Function.apply` (autograd.py).
"""
from __future__ import annotations

import math
import warnings
from collections import namedtuple

import numpy as np


float32 = np.float32
float64 = np.float64
int64 = np.int64

_reduction_result = namedtuple("return_types", ["values", "indices"])


# Counts every version bump of every tensor. A node records it when made; if it has not moved by
# the time backward reaches the node, no input can have changed, and the per-input check is skipped.
_WRITES = [0]


class Tensor:
    __slots__ = ("_data", "_version", "grad", "requires_grad", "_ctx", "_hooks", "_retains_grad", "name",
                 "__weakref__")
    # numpy must hand `ndarray + Tensor` to Tensor.__radd__ instead of looping over elements
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None, name: str | None = None):
        self._data = _to_array(data, dtype)
        self._version = 0
        self.grad = None
        self._ctx = None
        self._hooks = None
        self._retains_grad = False
        self.name = name
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _make(cls, data: np.ndarray, requires_grad: bool, ctx) -> "Tensor":
        # the hot path for op outputs: skips __init__'s conversions
        t = object.__new__(Tensor)
        t._data = data
        t._version = 0
        t.grad = None
        t.requires_grad = requires_grad
        t._ctx = ctx
        t._hooks = None
        t._retains_grad = False
        t.name = None
        return t

    # ------------------------------------------------------------------ data and its version
    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value) -> None:
        # `t.data = a` and `t.data -= a` land here. A list or a number is refused, as PyTorch
        # refuses a non-Tensor: its dtype would be a guess, and kept as is, `t * 2` repeats a list
        if isinstance(value, Tensor):
            value = value._data
        elif isinstance(value, np.generic):  # what numpy arithmetic on a 0-d array returns
            value = np.asarray(value)
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"Tensor.data: expected a numpy array or a Tensor, got {type(value).__name__} "
                            f"(convert it first: t.data = np.asarray(value, dtype=t.dtype))")
        if value.dtype.kind not in _NUMERIC_KINDS or (self.requires_grad and value.dtype.kind != "f"):
            raise TypeError(f"Tensor.data: cannot set data of dtype {value.dtype} on a "
                            f"{'tensor that requires grad (floats only)' if self.requires_grad else 'tensor'}")
        # the graph may have saved the old values: a new version makes backward check them
        self._data = value
        self._version += 1
        _WRITES[0] += 1

    def _mark_modified(self) -> None:
        """Record an in-place write into `.data`, so a graph that saved this tensor can tell
        at backward that its saved values are stale (see autograd's version check)."""
        self._version += 1
        _WRITES[0] += 1

    # ------------------------------------------------------------------ array-like basics
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim: int | None = None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return self.data.size

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied: writing into it bypasses autograd)."""
        return self.data

    def __array__(self, dtype=None, copy=None):
        arr = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return arr.copy() if copy else arr

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted, got shape {self.shape}")
        return self.data.item()

    # float(loss) and int(n), as in PyTorch
    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def tolist(self):
        return self.data.tolist()

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.data.size} elements is ambiguous")
        return bool(self.data)

    __hash__ = object.__hash__  # == is elementwise, identity stays the hash

    @property
    def grad_fn(self):
        return self._ctx

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="Tensor(", precision=4)
        extra = f", size={self.shape}" if self.data.size == 0 and self.ndim > 1 else ""
        if self.data.dtype != np.float32:
            extra += f", dtype={self.data.dtype}"
        if self._ctx is not None:
            extra += f", grad_fn=<{type(self._ctx).__name__}Backward>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"Tensor({body}{extra})"

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        from .autograd import backward
        backward(self, gradient, retain_graph)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.data.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor; use .detach() instead")
        self.requires_grad = requires_grad
        return self

    def detach(self) -> "Tensor":
        """Same data, no history: gradients stop here (truncated BPTT is `h = h.detach()`)."""
        return Tensor._make(self.data, False, None)

    def retain_grad(self) -> None:
        """Keep `.grad` on a non-leaf tensor after backward (leaves always keep theirs)."""
        if self._ctx is not None:
            self._retains_grad = True

    def register_hook(self, fn) -> "RemovableHandle":
        """`fn(grad) -> new grad or None` runs when this tensor's gradient has been summed."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._hooks is None:
            self._hooks = {}
        handle = RemovableHandle(self._hooks)
        self._hooks[handle.id] = fn
        return handle

    def zero_(self) -> "Tensor":
        self._data[...] = 0
        self._mark_modified()
        return self

    # ------------------------------------------------------------------ dtype
    def float(self) -> "Tensor":
        return self.to(np.float32)

    def double(self) -> "Tensor":
        return self.to(np.float64)

    def long(self) -> "Tensor":
        return self.to(np.int64)

    def to(self, dtype) -> "Tensor":
        dtype = np.dtype(dtype)
        if dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"to: invalid dtype {dtype}; expected bool, an integer, a float or a complex dtype")
        if dtype.kind != "f":  # rounding has no gradient: the result leaves the graph, as in PyTorch
            return Tensor._make(self.data.astype(dtype), False, None)
        return _E.Cast.apply(self, dtype=dtype)

    astype = to

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other): return _E.Add.apply(self, _operand(other, self))
    def __radd__(self, other): return _E.Add.apply(_operand(other, self), self)
    def __sub__(self, other): return _E.Sub.apply(self, _operand(other, self))
    def __rsub__(self, other): return _E.Sub.apply(_operand(other, self), self)
    def __mul__(self, other): return _E.Mul.apply(self, _operand(other, self))
    def __rmul__(self, other): return _E.Mul.apply(_operand(other, self), self)
    def __truediv__(self, other): return _E.Div.apply(self, _operand(other, self))
    def __rtruediv__(self, other): return _E.Div.apply(_operand(other, self), self)
    def __neg__(self): return _E.Neg.apply(self)
    def __pos__(self): return self
    def __matmul__(self, other): return _M.MatMul.apply(self, _operand(other, self))
    def __rmatmul__(self, other): return _M.MatMul.apply(_operand(other, self), self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return _E.Pow.apply(self, exponent)
        return _E.PowScalar.apply(self, exponent=_scalar(exponent, "pow"))

    def __rpow__(self, base):
        return _E.Pow.apply(_operand(base, self), self)

    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    neg = __neg__
    matmul = __matmul__
    pow = __pow__

    # comparisons give boolean tensors; they are not differentiable
    def __lt__(self, other): return _compare(np.less, self, other)
    def __le__(self, other): return _compare(np.less_equal, self, other)
    def __gt__(self, other): return _compare(np.greater, self, other)
    def __ge__(self, other): return _compare(np.greater_equal, self, other)
    def __eq__(self, other): return _compare(np.equal, self, other)
    def __ne__(self, other): return _compare(np.not_equal, self, other)

    # ------------------------------------------------------------------ elementwise math
    def exp(self): return _E.Exp.apply(self)
    def log(self): return _E.Log.apply(self)
    def sqrt(self): return _E.Sqrt.apply(self)
    def abs(self): return _E.Abs.apply(self)
    def tanh(self): return _E.Tanh.apply(self)
    def sigmoid(self): return _E.Sigmoid.apply(self)
    def relu(self): return _E.Relu.apply(self)
    def maximum(self, other): return _E.Maximum.apply(self, _operand(other, self))
    def minimum(self, other): return _E.Minimum.apply(self, _operand(other, self))

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        for b in (min, max):  # numpy would take a string or a Tensor and fail deep inside
            if b is not None and not isinstance(b, (int, float, np.integer, np.floating)):
                raise TypeError(f"clamp: min and max must be numbers, got {type(b).__name__} "
                                "(for tensor bounds use x.maximum(lo).minimum(hi))")
        # numpy scalars become Python numbers so a float64 bound cannot widen a float32 tensor
        lo, hi = (b.item() if isinstance(b, np.generic) else b for b in (min, max))
        return _E.Clamp.apply(self, lo=lo, hi=hi)

    clip = clamp

    # ------------------------------------------------------------------ reductions
    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _R.Sum.apply(self, dims=_dims(self, dim, axis, "sum"), keepdim=_kd(keepdim, keepdims))

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _R.Mean.apply(self, dims=_dims(self, dim, axis, "mean"), keepdim=_kd(keepdim, keepdims))

    def var(self, dim=None, keepdim=False, *, correction=1, unbiased=None, axis=None, keepdims=None):
        """Variance; `correction=1` (PyTorch's default) divides by N - 1, `correction=0` by N.

        With N <= correction (one element, unbiased) no degrees of freedom are left: as in
        PyTorch the result is nan (inf where the elements differ), so are the gradients, and
        a RuntimeWarning says why."""
        return self._var("var", dim, keepdim, correction, unbiased, axis, keepdims)

    def std(self, dim=None, keepdim=False, *, correction=1, axis=None, keepdims=None):
        return self._var("std", dim, keepdim, correction, None, axis, keepdims).sqrt()

    def _var(self, name, dim, keepdim, correction, unbiased, axis, keepdims):
        if self.dtype.kind != "f":  # PyTorch refuses too: the mean of integers is not one
            raise TypeError(f"{name}: needs a floating-point tensor, got {self.dtype}; cast it with .float()")
        if unbiased is not None:
            correction = int(unbiased)
        dims = _dims(self, dim, axis, name)
        n = math.prod(self.shape[d] for d in dims)
        if n - correction <= 0:
            warnings.warn(f"{name}(): degrees of freedom <= 0 ({n} element(s) per result, correction="
                          f"{correction}): the result is nan or inf, as in PyTorch", RuntimeWarning, stacklevel=3)
        return _R.Var.apply(self, dims=dims, keepdim=_kd(keepdim, keepdims), correction=correction)

    def logsumexp(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return _R.LogSumExp.apply(self, dims=_dims(self, dim, axis, "logsumexp"),
                                  keepdim=_kd(keepdim, keepdims))

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Like PyTorch: no dim -> the largest element; an int dim -> (values, indices).

        Tie rule: the whole gradient goes to the first occurrence of the maximum (the index
        argmax returns), never split between equal elements.
        """
        return self._extremum(_R.Max, dim, keepdim, axis, keepdims, "max")

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """Like `max`; the tie rule is the same (first occurrence gets the gradient)."""
        return self._extremum(_R.Min, dim, keepdim, axis, keepdims, "min")

    def _extremum(self, op, dim, keepdim, axis, keepdims, name):
        d = dim if dim is not None else axis
        dims = _dims(self, d, None, name)
        keep = _kd(keepdim, keepdims)
        values = op.apply(self, dims=dims, keepdim=keep)
        if d is None or isinstance(d, (tuple, list)):
            return values
        # argmax/argmin pick the first occurrence too, so indices agree with the gradient
        indices = _arg(np.argmax if op is _R.Max else np.argmin, self, d, keep)
        return _reduction_result(values, indices)

    def amax(self, dim=None, keepdim=False):
        return _R.Max.apply(self, dims=_dims(self, dim, None, "amax"), keepdim=keepdim)

    def amin(self, dim=None, keepdim=False):
        return _R.Min.apply(self, dims=_dims(self, dim, None, "amin"), keepdim=keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _arg(np.argmax, self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _arg(np.argmin, self, dim, keepdim)

    # ------------------------------------------------------------------ movement
    def reshape(self, *shape):
        return _V.Reshape.apply(self, shape=_shape_arg(shape))

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s = _norm_dim(start_dim, self.ndim, "flatten")
        e = _norm_dim(end_dim, self.ndim, "flatten")
        shape = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
        return self.reshape(shape)

    def permute(self, *dims):
        return _V.Permute.apply(self, dims=_shape_arg(dims))

    def transpose(self, dim0=-2, dim1=-1):
        if self.ndim < 2:
            return self
        perm = list(range(self.ndim))
        a, b = _norm_dim(dim0, self.ndim, "transpose"), _norm_dim(dim1, self.ndim, "transpose")
        perm[a], perm[b] = perm[b], perm[a]
        return _V.Permute.apply(self, dims=tuple(perm))

    @property
    def T(self):
        return _V.Permute.apply(self, dims=tuple(reversed(range(self.ndim))))

    def expand(self, *shape):
        shape = _shape_arg(shape)
        # -1 keeps that dimension, as in PyTorch
        lead = len(shape) - self.ndim
        if -1 in shape[:max(lead, 0)]:
            raise ValueError(f"expand: -1 is not allowed in a new leading dimension (shape {shape})")
        shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return _V.Expand.apply(self, shape=shape)

    def broadcast_to(self, shape):
        return _V.Expand.apply(self, shape=tuple(shape))

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(n for n in self.shape if n != 1)
        else:
            dims = {_norm_dim(d, self.ndim, "squeeze") for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
            shape = tuple(n for i, n in enumerate(self.shape) if not (i in dims and n == 1))
        return self.reshape(shape)

    def unsqueeze(self, dim):
        d = _norm_dim(dim, self.ndim + 1, "unsqueeze")
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def __getitem__(self, index):
        return _V.GetItem.apply(self, index=_index_arg(index))

    def split(self, split_size_or_sections, dim=0):
        if self.ndim == 0:
            raise ValueError("split: expects a tensor with at least 1 dimension, got a 0-d tensor")
        d = _norm_dim(dim, self.ndim, "split")
        n = self.shape[d]
        if isinstance(split_size_or_sections, int):
            if split_size_or_sections <= 0:
                raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
            sizes = [min(split_size_or_sections, n - i) for i in range(0, n, split_size_or_sections)]
            sizes = sizes or [0]  # an empty dim is one empty piece, as in PyTorch: cat(x.split(k)) == x
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split: sections {sizes} do not sum to dim {d} of size {n} (shape {self.shape})")
        out, start = [], 0
        for size in sizes:
            index = (slice(None),) * d + (slice(start, start + size),)
            out.append(self[index])
            start += size
        return tuple(out)

    def chunk(self, chunks, dim=0):
        if not isinstance(chunks, (int, np.integer)) or chunks <= 0:
            raise ValueError(f"chunk: chunks must be a positive integer, got {chunks!r}")
        n = self.shape[_norm_dim(dim, self.ndim, "chunk")]
        return self.split(max(1, -(-n // chunks)), dim)

    # ------------------------------------------------------------------ nn math
    def softmax(self, dim=-1):
        return _N.Softmax.apply(self, dim=_norm_dim(dim, self.ndim, "softmax"))

    def log_softmax(self, dim=-1):
        return _N.LogSoftmax.apply(self, dim=_norm_dim(dim, self.ndim, "log_softmax"))


class RemovableHandle:
    """Returned by `register_hook`; `handle.remove()` takes the hook off again."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self.hooks = hooks
        RemovableHandle._next_id += 1
        self.id = RemovableHandle._next_id

    def remove(self) -> None:
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


# The argument helpers and the ops import Tensor from here (the ops through autograd): import
# them last.
from ._args import (_NUMERIC_KINDS, _arg, _compare, _dims, _index_arg, _kd, _norm_dim, _operand, _to_array,  # noqa: E402
                    _scalar, _shape_arg)
from .ops import elementwise as _E  # noqa: E402
from .ops import matmul as _M  # noqa: E402
from .ops import movement as _V  # noqa: E402
from .ops import nn as _N  # noqa: E402
from .ops import reduce as _R  # noqa: E402
