"""Ops that move or select elements without arithmetic. Most forwards return numpy views."""
import numpy as np

from ..autograd import Function, check_same_dtype


class Reshape(Function):
    def forward(self, a, shape):
        self.saved = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.saved)


class Permute(Function):
    def forward(self, a, dims):
        if sorted(d % max(a.ndim, 1) for d in dims) != list(range(a.ndim)):
            raise ValueError(f"dims {dims} are not a permutation of the {a.ndim} axes")
        self.saved = dims
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
    """x[index]. Basic indices give a view and the gradient is written into a zero array;
    integer-array (or boolean) indices may repeat an element, so backward scatter-adds."""

    def forward(self, a, index):
        self.saved = (a.shape, a.dtype, index)
        return a[index]

    def backward(self, g):
        shape, dtype, index = self.saved
        out = np.zeros(shape, dtype=dtype)
        if _is_basic(index):
            out[index] = g
        else:
            np.add.at(out, index, g)
        return out


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
        return tuple(np.moveaxis(g, dim, 0))
