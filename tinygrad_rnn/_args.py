"""How `Tensor`'s methods read their arguments: the other operand of a binary op, `dim=`/`axis=`,
shapes and indices, each normalised (or refused with the op's name) before an op sees it."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


# bool, integers, floats, complex. Strings, objects, dates are refused, as in PyTorch: numpy
# would keep them, and ops would fail far from the cause or answer nonsense.
_NUMERIC_KINDS = "biufc"


def _to_array(data, dtype=None) -> np.ndarray:
    """Python floats and lists become float32 (ints stay int64) unless `dtype` says otherwise;
    numpy arrays keep their dtype."""
    if isinstance(data, Tensor):
        arr = data.data
    elif isinstance(data, np.ndarray):
        arr = data
    else:
        try:
            arr = np.asarray(data)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"Tensor(): {e}") from None
        # only without an explicit dtype: rounding through float32 would lose float64 precision
        if dtype is None and arr.dtype == np.float64 and not isinstance(data, np.generic):
            arr = arr.astype(np.float32)
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"Tensor(): invalid data type {_what(data, arr)}; expected numbers, "
                        "(nested) lists of numbers or a numeric numpy array")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        if np.dtype(dtype).kind not in _NUMERIC_KINDS:
            raise TypeError(f"Tensor(): invalid dtype {np.dtype(dtype)}; expected bool, an integer, "
                            "a float or a complex dtype")
        arr = arr.astype(dtype)
    return arr


def _what(data, arr: np.ndarray) -> str:
    """The type that made `arr` non-numeric, for the error message."""
    if isinstance(data, np.ndarray) or arr.dtype.kind != "O":
        return {"U": "'str'", "S": "'bytes'"}.get(arr.dtype.kind, f"(dtype {arr.dtype})")
    for x in arr.flat:
        if not isinstance(x, (int, float, complex, np.generic)):
            return repr(type(x).__name__)
    return "'int' (too large for 64 bits)"

def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _compare(fn, t: Tensor, other):
    """fn(t, other) as a boolean tensor. NotImplemented for a string, None or another
    non-number, so Python answers as PyTorch does: `t == None` is False, `t < "a"` a TypeError
    naming both types (numpy would compare elementwise or fail in its ufunc machinery)."""
    if isinstance(other, Tensor):
        other = other.data
    elif isinstance(other, (list, tuple)):
        other = _to_array(other)
    elif not isinstance(other, (int, float, np.ndarray, np.number, np.bool_)) or \
            isinstance(other, np.ndarray) and other.dtype.kind not in _NUMERIC_KINDS:
        return NotImplemented
    return Tensor._make(np.asarray(fn(t.data, other)), False, None)


def _scalar(x, op):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (int, float)):
        return x
    raise TypeError(f"{op}: expected a number or a Tensor, got {type(x).__name__}")


def _operand(x, like: Tensor):
    """The other side of a binary op: a Tensor, or a Python number that adopts `like`'s dtype.

    numpy scalars become Python numbers first, so `np.float64(2) * float32_tensor` stays float32
    (the dtype rule is: tensors never mix float widths silently; numbers follow the tensor).
    """
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float, np.generic)):
        return _scalar(x, "binary op")
    if isinstance(x, (list, tuple)):
        # a list of numbers has no dtype of its own: on a float tensor it follows the tensor, as
        # a number does (`x64 + [0.5]` would otherwise meet a float32 list and be refused)
        arr = _to_array(x)
        return Tensor(arr, dtype=like.dtype if like.dtype.kind == "f" and arr.dtype.kind in "biuf" else None)
    if isinstance(x, np.ndarray):
        return Tensor(x)
    raise TypeError(f"unsupported operand type {type(x).__name__} for a Tensor op")


def _kd(keepdim, keepdims):
    return bool(keepdims) if keepdims is not None else bool(keepdim)


def _norm_dim(d, ndim, op):
    if not isinstance(d, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an int, got {type(d).__name__}")
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise IndexError(f"{op}: dim {d} out of range for a tensor with {ndim} dims")
    return int(d) % max(ndim, 1)


def _dims(t, dim, axis, op):
    """Normalise PyTorch `dim=` (or numpy `axis=`) to a sorted tuple of non-negative axes."""
    if dim is None:
        dim = axis
    if dim is None:
        return tuple(range(t.ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    out = tuple(sorted({_norm_dim(d, t.ndim, op) for d in dims}))
    if t.ndim == 0:
        return ()
    return out


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    for n in shape:  # int() would cut 2.5 to 2 without a word
        if not isinstance(n, (int, np.integer)):
            raise TypeError(f"shape must be integers, got {type(n).__name__} {n!r} in {tuple(shape)}")
    return tuple(int(n) for n in shape)


def _index_arg(index):
    """Unwrap tensors inside an index so numpy sees arrays; integer arrays gather."""
    if isinstance(index, tuple):
        return tuple(_index_arg(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        arr = np.asarray(index)
        # an empty list is float64 to asarray, but indexes as integers (x[[]] is empty)
        return arr.astype(np.intp) if arr.size == 0 else arr
    return index


def _arg(fn, t, dim, keepdim):
    if dim is None or t.ndim == 0:
        idx = np.asarray(fn(t.data))  # over the flattened tensor; keepdim keeps every dim, as 1
        return Tensor._make(idx.reshape((1,) * t.ndim) if keepdim else idx, False, None)
    d = _norm_dim(dim, t.ndim, fn.__name__)
    idx = fn(t.data, axis=d)
    return Tensor._make(np.expand_dims(idx, d) if keepdim else np.asarray(idx), False, None)


def is_token_ids(x) -> bool:
    """Integer input to a recurrent step stands for one-hot rows (the one rule for cells,
    layers and the fused steps)."""
    return x.dtype.kind in "iu"
