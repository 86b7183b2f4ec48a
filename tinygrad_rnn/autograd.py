"""The engine: `Function` (one differentiable op) and the backward walk.

Read this file top to bottom to see how autograd works:

1. `Function.apply` runs an op's `forward` on plain numpy arrays and, when some input needs a
   gradient, remembers the op and its inputs in the output's `_ctx`. That is the graph.
2. `backward` walks that graph from the output back to the leaves *iteratively* (no Python
   recursion, so a 10,000-step unrolled RNN is fine), always visiting the newest node that has
   received a gradient. A node is made after its inputs, so by the time it comes up every node
   that consumed it, being newer, has been visited and has sent its share: creation order is a
   topological order, and the walk needs no count of consumers.
3. Each node's `backward` sends one share of the gradient to each input. An `Accumulator`
   sums the shares a tensor receives, after reducing each to the tensor's shape (`sum_to`, the
   one place unbroadcasting happens). At the end every leaf adds its sum into `.grad`.

That is all of it. `tinygrad_rnn.fast` (docs/fast.md) makes it faster without changing a value:
it installs an accumulator of its own (`use_accumulator`), which understands lazy shares
(objects with `.value()`) that its ops send. With `tinygrad_rnn.fast.disabled()` every op sends
plain arrays and the walk below sums them with the `Accumulator` defined here.
"""
from __future__ import annotations

import heapq
import itertools

import numpy as np

from .grad_mode import (AnomalyError, _mode, detect_anomaly, enable_grad, is_anomaly_enabled,  # noqa: F401
                        is_grad_enabled, no_grad, set_grad_enabled, user_frame)
from .tensor import _WRITES, Tensor


class ShapeError(ValueError):
    """Inputs whose shapes (or dtypes) an op cannot combine. The message names the op."""


class Function:
    """One differentiable op. Subclasses define `forward` and `backward` side by side.

    `forward(*arrays, **params)` gets numpy arrays (and Python constants), returns an array and
    stores what backward needs in `self.saved`. `backward(grad)` returns one gradient share per
    positional input (a tuple, or a single array for one input); it may return None for inputs
    whose `self.needs_input_grad[i]` is False, and need not reduce broadcast dimensions: the
    engine does that in one place.
    """

    __slots__ = ("parents", "needs_input_grad", "saved", "created_at", "versions", "seq", "writes")

    def forward(self, *args, **kwargs):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    @classmethod
    def apply(cls, *args, **kwargs) -> Tensor:
        # one pass over the inputs: their arrays, which of them want a gradient, their versions
        arrays, needs, versions, wants_grad = [], [], [], False
        for a in args:
            if isinstance(a, Tensor):
                arrays.append(a._data)
                needs.append(a.requires_grad)
                versions.append(a._version)
                wants_grad = wants_grad or a.requires_grad
            else:
                arrays.append(a)
                needs.append(False)
                versions.append(None)
        fn = object.__new__(cls)
        out = fn._run_forward(args, arrays, kwargs)
        if wants_grad and _mode.enabled:
            return fn._record(out, args, tuple(needs), tuple(versions))
        return Tensor._make(out, False, None)

    def _run_forward(self, args: tuple, arrays, kwargs: dict) -> np.ndarray:
        """forward(*arrays, **kwargs) as an array; errors name the op and its inputs `args`."""
        self.saved = ()
        try:
            out = self.forward(*arrays, **kwargs)
        except ShapeError:
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise ShapeError(f"{self.name()}: {e} (inputs: {describe(args)})") from e
        if type(out) is not np.ndarray:
            out = np.asarray(out)
        if _mode.anomaly and not _all_finite(out):
            raise AnomalyError(f"{self.name()} produced NaN/Inf in forward at {user_frame()} "
                               f"(inputs: {describe(args)})")
        return out

    def _record(self, out: np.ndarray, args: tuple, needs: tuple, versions: tuple) -> Tensor:
        """`out` as the Tensor this node made: the graph's edge back to `args`."""
        self.parents = args
        self.needs_input_grad = needs
        self.versions = versions  # what each input's data was, checked again at backward
        self.writes = _WRITES[0]
        self.created_at = user_frame() if _mode.anomaly else None
        self.seq = next(_creation_order)
        return Tensor._make(out, True, self)


# Numbers recorded nodes in the order they were made: the walk visits the newest first.
_creation_order = itertools.count()


def describe(args) -> str:
    """`(3, 4) float32, (4,) float32` for an op's inputs, used in error messages."""
    arrays = [a.data if isinstance(a, Tensor) else a for a in args]
    return ", ".join(f"{tuple(a.shape)} {a.dtype}" if isinstance(a, np.ndarray) else repr(a) for a in arrays)


def check_same_dtype(op: str, *arrays) -> None:
    """Binary ops refuse to mix float32 and float64: the rule is 'cast explicitly'."""
    first = None  # a plain loop, no set: the fused recurrent steps call this every time step
    for a in arrays:
        if isinstance(a, np.ndarray):
            dtype = a.dtype
            if first is None:
                first = dtype
            elif dtype is not first and dtype != first:  # numpy's builtin dtypes are singletons
                names = " vs ".join(str(a.dtype) for a in arrays if isinstance(a, np.ndarray))
                raise ShapeError(f"{op}: dtype mismatch ({names}); cast one side with .float() or .double()")


def _all_finite(a) -> bool:
    return np.asarray(a).dtype.kind not in "fc" or bool(np.isfinite(a).all())


def sum_to(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Reduce a broadcast gradient back to `shape`: the one place unbroadcasting happens."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0:
        raise RuntimeError(f"internal: gradient of shape {grad.shape} cannot be reduced to {shape}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    out = grad.sum(axis=axes, keepdims=True) if axes else grad
    return out.reshape(shape)


class Accumulator:
    """Sums the gradient shares each tensor receives during one backward walk.

    A share is an array, or an object with `.value()` giving one (a lazy share, see
    tinygrad_rnn/fast/lazy.py). This is the textbook rule: reduce each share to the tensor's
    shape, add it to what came before. `tinygrad_rnn.fast` installs a subclass that sums the
    same shares faster. An accumulator lives for one walk (`with`)."""

    def __init__(self):
        self.grads = {}  # id(tensor) -> the sum of its shares so far

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def add(self, t: Tensor, share) -> None:
        share = sum_to(np.asarray(share.value() if hasattr(share, "value") else share), t._data.shape)
        prev = self.grads.get(id(t))
        self.grads[id(t)] = share if prev is None else np.asarray(prev + share)

    def value(self, t: Tensor, keep: bool = False):
        """The sum of t's shares, or None if none came; the accumulator forgets it. `keep`: the
        caller keeps the array (as a `.grad`), so it must be one no op holds."""
        g = self.grads.pop(id(t), None)
        return np.array(g) if keep and g is not None else g

    def finite(self, share) -> bool:
        """No NaN or Inf in the share (for detect_anomaly)."""
        return _all_finite(share.value() if hasattr(share, "value") else share)


_accumulator = [Accumulator]


def use_accumulator(cls) -> None:
    """The Accumulator class (or subclass) every backward walk from now on sums shares with."""
    _accumulator[0] = cls


_SECOND_BACKWARD = ("Trying to backward through the graph a second time (or to use a graph after its saved "
                    "arrays were freed). Pass retain_graph=True to the first backward() if you need to "
                    "backward twice, or recompute the forward pass.")


def backward(root: Tensor, gradient=None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) into every leaf's `.grad`; see the module docstring."""
    if not root.requires_grad:
        raise RuntimeError("backward(): this tensor does not require grad and has no grad_fn; "
                           "did you create it under no_grad() or forget requires_grad=True?")
    if gradient is None:
        if root.data.size != 1:
            raise RuntimeError(f"backward(): grad can be implicitly created only for scalar outputs; "
                               f"this output has shape {root.shape}, pass gradient=...")
        seed = np.ones_like(root.data)
    else:
        seed = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient,
                          dtype=root.dtype)
        if seed.shape != root.shape:
            raise ShapeError(f"backward(): gradient shape {seed.shape} does not match "
                             f"output shape {root.shape}")
    with _accumulator[0]() as grads:
        _walk(root, seed, retain_graph, grads)


def _walk(root: Tensor, seed: np.ndarray, retain_graph: bool, grads: Accumulator) -> None:
    grads.add(root, seed)
    seen, leaves, ready = {id(root)}, [], []  # ready: a heap of (-seq, node), newest first
    if root._ctx is None:
        leaves.append(root)
    else:
        ready.append((-root._ctx.seq, root))
    while ready:
        node = heapq.heappop(ready)[1]
        fn = node._ctx
        if fn.parents is None:
            raise RuntimeError(_SECOND_BACKWARD)
        g = grads.value(node)  # None when no path from the root carried a gradient here
        if g is not None:
            if node._hooks:
                g = _run_hooks(node, g)
            if node._retains_grad:
                node.grad = Tensor._make(np.array(g), False, None)
            if fn.writes != _WRITES[0]:  # some tensor was written since this node was made
                _check_versions(fn)
            shares = fn.backward(g)
            if type(shares) is not tuple:
                shares = (shares,)
        else:
            shares = (None,) * len(fn.parents)
        for p, need, share in zip(fn.parents, fn.needs_input_grad, shares):
            if not need:
                continue
            if id(p) not in seen and (p._ctx is not None or share is not None):
                seen.add(id(p))  # visit every node once, to pass its share on and free it
                if p._ctx is None:
                    leaves.append(p)
                else:
                    heapq.heappush(ready, (-p._ctx.seq, p))
            if share is not None:
                if _mode.anomaly and not grads.finite(share):
                    raise AnomalyError(f"{fn.name()}Backward produced NaN/Inf; the op was "
                                       f"created at {fn.created_at}")
                grads.add(p, share)
        if not retain_graph:  # free the saved arrays and the edges as soon as the walk has passed them
            fn.parents = None
            fn.saved = None
    for leaf in leaves:  # every node is done, so each leaf's sum is complete
        g = grads.value(leaf, keep=True)
        if leaf._hooks:
            g = np.array(_run_hooks(leaf, g))  # a hook may have kept its argument: copy
        _accumulate_leaf(leaf, g)


def _check_versions(fn: Function) -> None:
    """Refuse to differentiate with values that were overwritten after the forward pass."""
    for i, (p, v) in enumerate(zip(fn.parents, fn.versions)):
        if v is not None and p._version != v:
            what = f"'{p.name}' " if p.name else ""
            raise RuntimeError(
                f"{fn.name()}Backward: one of the tensors it needs, input {i} {what}of shape "
                f"{tuple(p.shape)} {p.dtype}, was modified in place after the forward pass "
                f"(version {v} at forward, {p._version} now), e.g. by an optimizer step or a "
                f"write to .data before backward(). Call backward() first, or recompute the "
                f"forward pass. With detect_anomaly() on, this message says where the op was created"
                + (f": {fn.created_at}" if fn.created_at else "."))


def _run_hooks(node: Tensor, g: np.ndarray) -> np.ndarray:
    for hook in list(node._hooks.values()):
        out = hook(Tensor._make(g, False, None))
        if out is not None:
            out = out.data if isinstance(out, Tensor) else np.asarray(out)
            if out.shape != g.shape:
                raise ShapeError(f"hook {hook!r} returned a gradient of shape {out.shape}, "
                                 f"expected {g.shape}")
            g = out
    return g


def _accumulate_leaf(leaf: Tensor, g: np.ndarray) -> None:
    """`g` is the walk's own array: `.grad` may keep it (in C order: optimizers expect it)."""
    if g.dtype != leaf.data.dtype:
        g = g.astype(leaf.data.dtype)
    if leaf.grad is None:
        leaf.grad = Tensor._make(g if g.flags.c_contiguous else np.ascontiguousarray(g), False, None)
    else:
        leaf.grad.data += g
