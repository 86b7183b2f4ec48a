"""Check analytic gradients against central finite differences, in float64.

For each output element k and input element j, the analytic d out_k / d x_j comes from
`backward()`, the numeric one from (f(x + eps e_j) - f(x - eps e_j)) / (2 eps). They must
agree within `atol + rtol * |numeric|`.

The numeric side always costs two forwards per input element. The analytic side costs one
backward per row checked:
- small problems (outputs x inputs <= `full_limit`): every row of the Jacobian;
- larger ones: `n_directions` random projections of the outputs, v^T J, compared element by
  element over the inputs against v^T of the same finite differences.
"""
from __future__ import annotations

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with finite differences."""


def _outputs(result) -> list:
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    return [o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f"]


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True, full_limit: int = 20_000, n_directions: int = 2,
              seed: int = 0) -> bool:
    """True when every input that requires grad has a correct gradient.

    `fn(*inputs)` returns a Tensor or a tuple of Tensors. Inputs that require grad must be
    float64: float32 finite differences are too coarse to tell a bug from round-off, so they
    are refused rather than silently converted.

    The defaults (eps=1e-6, atol=1e-5, rtol=1e-3) are PyTorch's, for users: a function of your
    own may lose digits (a difference of nearly equal terms, a sum of many) without being
    wrong. This project's tests pass `atol=1e-8, rtol=1e-6` (tests/tolerances.py): over their
    gradchecks the analytic and numeric gradients of our ops differed by at most 3.9e-8, and at
    PyTorch's defaults a backward wrong by 0.05% can pass.
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    wrt = [(i, t) for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad")
    for i, t in wrt:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {t.dtype}; use float64 inputs "
                            f"(Tensor(x, dtype=np.float64) or .double()) for finite differences")
    # Work on fresh float64 leaves: the user's tensors (leaf or not) keep their data and .grad,
    # and the finite differences can write into contiguous private copies.
    inputs = list(inputs)
    for i, _ in wrt:
        inputs[i] = Tensor._make(np.array(inputs[i].data, copy=True, order="C"), True, None)
    wrt = [(i, inputs[i]) for i, _ in wrt]
    inputs = tuple(inputs)
    outs = _outputs(fn(*inputs))
    sizes = [o.data.size for o in outs]
    n_out = sum(sizes)
    n_in = sum(t.data.size for _, t in wrt)
    full = n_out * n_in <= full_limit
    projections = np.eye(n_out) if full else np.random.default_rng(seed).standard_normal((n_directions, n_out))
    # numeric (projected) Jacobian of every input, computed once: rows = projections
    numeric = [_numeric(fn, inputs, t, projections, eps) for _, t in wrt]

    for row, v in enumerate(projections):
        analytic = _analytic(fn, inputs, wrt, v, sizes)
        for (i, t), a_grad, n_all in zip(wrt, analytic, numeric):
            n_grad = n_all[row]
            # written as `not <=` so a NaN on either side counts as a failure
            bad = ~(np.abs(a_grad - n_grad) <= atol + rtol * np.abs(n_grad))
            if bad.any():
                j = int(np.argmax(bad.reshape(-1)))
                elem = tuple(int(k) for k in np.unravel_index(j, t.shape)) if t.ndim else ()
                what = f"output element {row}" if full else f"random output projection {row}"
                msg = (f"gradcheck failed for input {i} (shape {t.shape}) at element {elem}, "
                       f"{what}: analytic {float(a_grad.reshape(-1)[j])!r}, numeric "
                       f"{float(n_grad.reshape(-1)[j])!r} (atol={atol}, rtol={rtol}, eps={eps}); "
                       f"{int(bad.sum())} of {bad.size} elements disagree")
                if raise_exception:
                    raise GradcheckError(msg)
                return False
    return True


def _analytic(fn, inputs, wrt, v, sizes) -> list:
    """v^T J for each input: backward of each output with its slice of v as the seed."""
    for _, t in wrt:
        t.grad = None
    outs = _outputs(fn(*inputs))
    start = 0
    for o, n in zip(outs, sizes):
        seed = v[start:start + n].reshape(o.shape)
        start += n
        if o.requires_grad and np.any(seed):
            o.backward(seed, retain_graph=True)  # grads add up over outputs: v^T J by linearity
    return [t.grad.data.copy() if t.grad is not None else np.zeros(t.shape) for _, t in wrt]


def _numeric(fn, inputs, t, projections, eps) -> np.ndarray:
    """(rows, *t.shape): row r is d (projections[r] . f) / d t, by central differences."""
    flat = t.data.reshape(-1)
    grad = np.empty((projections.shape[0], flat.size))
    with no_grad():
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            plus = _flat_outputs(fn(*inputs))
            flat[j] = orig - eps
            minus = _flat_outputs(fn(*inputs))
            flat[j] = orig
            grad[:, j] = projections @ (plus - minus) / (2 * eps)
    return grad.reshape((projections.shape[0],) + t.shape)


def _flat_outputs(result) -> np.ndarray:
    outs = _outputs(result)
    return np.concatenate([o.data.reshape(-1).astype(np.float64) for o in outs]) if outs else np.zeros(0)
