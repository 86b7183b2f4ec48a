"""Elementwise ops. Inputs may broadcast against each other; backward returns full-shape
gradients and the engine (`autograd.sum_to`) reduces them to each input's shape."""
import numpy as np

from ..autograd import Function, check_same_dtype
from ..kernels import K


def floating(a):
    """Integers and bools enter float math (exp, tanh, ...) as float32, PyTorch's default
    dtype; numpy would pick float64 on one backend and fail in a numba kernel on the other."""
    return a.astype(np.float32) if a.dtype.kind in "biu" else a


class Add(Function):
    def forward(self, a, b):
        check_same_dtype("add", a, b)
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, a, b):
        check_same_dtype("sub", a, b)
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        check_same_dtype("mul", a, b)
        self.saved = (a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        need_a, need_b = self.needs_input_grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Function):
    def forward(self, a, b):
        check_same_dtype("div", a, b)
        out = a / b
        self.saved = (b, out)
        return out

    def backward(self, g):
        b, out = self.saved
        ga = g / b  # d(a/b)/db = -(a/b)/b, so the b side reuses ga: -ga * out
        return (ga if self.needs_input_grad[0] else None), (-ga * out if self.needs_input_grad[1] else None)


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class PowScalar(Function):
    """x ** p for a Python number p."""

    def forward(self, a, exponent):
        self.saved = (a, exponent)
        return a ** exponent

    def backward(self, g):
        a, p = self.saved
        if p == 0:  # x ** 0 is constant; p * a ** (p - 1) would be 0 * inf = NaN at a = 0
            return np.zeros_like(g)
        if p == 2:
            return g * (2 * a)
        return g * (p * a ** (p - 1))


class Pow(Function):
    """a ** b with a tensor exponent; d/db needs log(a), so a must be positive there."""

    def forward(self, a, b):
        check_same_dtype("pow", a, b)
        out = a ** b
        self.saved = (a, b, out)
        return out

    def backward(self, g):
        a, b, out = self.saved
        need_a, need_b = self.needs_input_grad
        # a may be a Python number (2 ** x): np.log would make it a float64 scalar and widen g
        log_a = np.log(a, dtype=out.dtype) if need_b else None
        return ((g * b * a ** (b - 1)) if need_a else None), ((g * out * log_a) if need_b else None)


class Exp(Function):
    def forward(self, a):
        out = np.exp(floating(a))
        self.saved = out
        return out

    def backward(self, g):
        return g * self.saved


class Log(Function):
    def forward(self, a):
        self.saved = a
        return np.log(floating(a))

    def backward(self, g):
        return g / self.saved


class Sqrt(Function):
    def forward(self, a):
        out = np.sqrt(floating(a))
        self.saved = out
        return out

    def backward(self, g):
        return g / (2 * self.saved)


class Abs(Function):
    def forward(self, a):
        self.saved = a
        return np.abs(a)

    def backward(self, g):
        return g * np.sign(self.saved)  # 0 at the kink, as in PyTorch


class Tanh(Function):
    def forward(self, a):
        out = np.tanh(floating(a))  # numpy's SIMD tanh beats numba's scalar one (no SVML on PyPI)
        self.saved = out
        return out

    def backward(self, g):
        return K.tanh_backward(g, self.saved)


class Sigmoid(Function):
    def forward(self, a):
        out = K.sigmoid(floating(a))
        self.saved = out
        return out

    def backward(self, g):
        return K.sigmoid_backward(g, self.saved)


class Relu(Function):
    def forward(self, a):
        out = np.maximum(a, 0)
        self.saved = out
        return out

    def backward(self, g):
        return K.relu_backward(g, self.saved)


class Maximum(Function):
    """Elementwise max. Ties split the gradient equally between both sides, as PyTorch does."""

    def forward(self, a, b):
        check_same_dtype("maximum", a, b)
        self.saved = (a, b)
        return np.maximum(a, b)

    def backward(self, g):
        a, b = self.saved
        share_a = (a > b) + 0.5 * (a == b)
        return g * share_a.astype(g.dtype), g * (1 - share_a).astype(g.dtype)


class Minimum(Function):
    """Elementwise min; ties split the gradient equally."""

    def forward(self, a, b):
        check_same_dtype("minimum", a, b)
        self.saved = (a, b)
        return np.minimum(a, b)

    def backward(self, g):
        a, b = self.saved
        share_a = (a < b) + 0.5 * (a == b)
        return g * share_a.astype(g.dtype), g * (1 - share_a).astype(g.dtype)


class Clamp(Function):
    """Clip into [lo, hi]; the gradient passes where lo <= x <= hi (bounds included)."""

    def forward(self, a, lo=None, hi=None):
        self.saved = (a, lo, hi)
        return np.clip(a, lo, hi)

    def backward(self, g):
        a, lo, hi = self.saved
        inside = np.ones(a.shape, dtype=bool)
        if lo is not None:
            inside &= a >= lo
        if hi is not None:
            inside &= a <= hi
        return g * inside


class Where(Function):
    """where(cond, a, b): the gradient goes to a where cond holds, to b elsewhere."""

    def forward(self, a, b, cond):
        check_same_dtype("where", a, b)
        self.saved = cond
        return np.where(cond, a, b)

    def backward(self, g):
        cond = self.saved
        zero = np.zeros((), g.dtype)
        need_a, need_b = self.needs_input_grad
        return (np.where(cond, g, zero) if need_a else None), (np.where(cond, zero, g) if need_b else None)


class Cast(Function):
    def forward(self, a, dtype):
        self.saved = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.saved)
