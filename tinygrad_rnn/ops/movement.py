"""Ops that move or select elements without arithmetic. Most forwards return numpy views."""
import numpy as np

from .. import fast
from ..autograd import Function, check_same_dtype
from ..fast.lazy import SliceGrad


class Reshape(Function):
    def forward(self, a, shape):
        self.saved = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.saved)


class Permute(Function):
    def forward(self, a, dims):
        norm = tuple(d + a.ndim if d < 0 else d for d in dims)
        if sorted(norm) != list(range(a.ndim)):
            raise ValueError(f"dims {dims} are not a permutation of the {a.ndim} axes")
        self.saved = norm  # backward inverts with argsort, which needs non-negative axes
        return a.transpose(dims)

    def backward(self, g):
        return g.transpose(np.argsort(self.saved))


class Expand(Function):
    """Broadcast to a larger shape. Backward is the identity: the engine's `sum_to` already
    reduces a gradient back over broadcast dimensions."""

    def forward(self, a, shape):
        return np.broadcast_to(a, shape)

    def backward(self, g):
        return g


def _is_basic(index) -> bool:
    """True when numpy indexing returns a view (ints, slices, None, Ellipsis only)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)


class GetItem(Function):
    """x[index]. The gradient is zero outside the selected elements; integer-array (or boolean)
    indices may pick an element twice, and both picks count. The fast path sends it lazily
    (fast/lazy.py SliceGrad), added into x's gradient in place: reading a length-T sequence
    step by step then costs O(T) in backward, not O(T^2)."""

    def forward(self, a, index):
        self.saved = (a.shape, a.dtype, index)
        return a[index]

    def backward(self, g):
        shape, dtype, index = self.saved
        if fast.enabled():
            return SliceGrad(shape, dtype, index, g, _is_basic(index))
        grad = np.zeros(shape, dtype)
        np.add.at(grad, index, g)
        return grad


class Cat(Function):
    def forward(self, *arrays, dim):
        check_same_dtype("cat", *arrays)
        self.saved = (dim, np.cumsum([a.shape[dim] for a in arrays])[:-1])
        return np.concatenate(arrays, axis=dim)

    def backward(self, g):
        dim, bounds = self.saved
        return tuple(np.split(g, bounds, axis=dim))


class Stack(Function):
    def forward(self, *arrays, dim):
        check_same_dtype("stack", *arrays)
        self.saved = dim
        return np.stack(arrays, axis=dim)

    def backward(self, g):
        dim = self.saved
        return tuple(g if dim == 0 else np.moveaxis(g, dim, 0))  # moveaxis: ~5 µs of Python
