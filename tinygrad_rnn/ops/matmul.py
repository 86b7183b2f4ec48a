"""Matrix product with numpy's `@` semantics: 1-D . 1-D, 2-D, and batched N-D with broadcast
batch dimensions. A 1-D operand is treated as a row (left) or a column (right) and that
dimension is dropped from the result; backward puts it back, multiplies, and drops it again."""
import numpy as np

from .. import fast
from ..autograd import Function, check_same_dtype
from ..fast.lazy import OuterGrad
from ..kernels import K


class MatMul(Function):
    def forward(self, a, b):
        if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.ndim == 0 or b.ndim == 0:
            raise ValueError("both operands must be tensors with at least 1 dimension")
        check_same_dtype("matmul", a, b)
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"inner dimensions differ: {a.shape} @ {b.shape}")
        self.saved = (a, b)
        return K.matmul(a, b)

    def backward(self, g):
        a, b = self.saved
        need_a, need_b = self.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:  # the common case, without the 1-D bookkeeping
            return (K.matmul(g, b.T) if need_a else None), (_outer(a, g) if need_b else None)
        # restore the dropped unit dimensions: (..., n, m) with n = 1 for a 1-D a, m = 1 for a 1-D b
        if b.ndim == 1:
            g = g[..., None]
        if a.ndim == 1:
            g = g[..., None, :]
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        ga = gb = None
        if need_a:
            ga = K.matmul(g, np.swapaxes(b2, -1, -2))
            if a.ndim == 1:
                ga = ga[..., 0, :]
        if need_b:
            gb = K.matmul(np.swapaxes(a2, -1, -2), g)
            if b.ndim == 1:
                gb = gb[..., 0]
        return ga, gb


class Linear(Function):
    """y = x @ w.T + b for 2-D x, w (out, in), b (out,) or None: nn.Linear as one node.

    Op by op it records three (the transpose, the matmul, the add) and holds the product before
    the bias as a fourth array. Same arithmetic in the same order (the bias added in place to
    the product), so the values equal the op-by-op graph bit for bit; w's gradient, g.T @ x
    where the graph computes (x.T @ g).T, equals it up to the order of its sums (tests/test_nn.py)."""

    def forward(self, x, w, b):
        check_same_dtype("linear", x, w, b)
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or (b is not None and b.shape != (w.shape[0],)):
            raise ValueError(f"expected x (N, in), weight (out, in), bias (out,); got x {x.shape}, "
                             f"weight {w.shape}" + ("" if b is None else f", bias {b.shape}"))
        out = K.matmul(x, w.T)
        if b is not None:
            K.add_row_into(out, b)
        self.saved = (x, w)
        return out

    def backward(self, g):
        x, w = self.saved
        need_x, need_w, need_b = self.needs_input_grad
        return (K.matmul(g, w) if need_x else None,
                _outer(g, x) if need_w else None,
                K.sum_rows(g) if need_b else None)


def _outer(a, b):
    """a.T @ b: a weight's share. The fast path leaves it lazy (fast/lazy.py), and the walk sums
    the products a weight receives at every time step in one GEMM."""
    return OuterGrad(a, b) if fast.enabled() else K.matmul(a.T, b)
