"""The engine: `Function` (one differentiable op), grad mode, anomaly mode and the backward walk.

Read this file top to bottom to see how autograd works:

1. `Function.apply` runs an op's `forward` on plain numpy arrays and, when some input needs a
   gradient, remembers the op and its inputs in the output's `_ctx`. That is the graph.
2. `backward` walks that graph from the output back to the leaves *iteratively* (no Python
   recursion, so a 10,000-step unrolled RNN is fine), always visiting the newest node that has
   received a gradient. A node is made after its inputs, so by the time it comes up every node
   that consumed it, being newer, has been visited and has sent its share: creation order is a
   topological order, and the walk needs no count of consumers. It sums gradients that arrive
   along several paths, reduces each one back to its input's shape in exactly one place
   (`sum_to`), and hands every leaf its gradient once the walk is done.
"""
from __future__ import annotations

import heapq
import itertools
import operator
import os
import threading
import traceback

import numpy as np

from . import blocks
from .kernels import K
from .tensor import _WRITES, Tensor


# ----------------------------------------------------------------------------- grad mode
class _GradMode(threading.local):
    # thread-local like PyTorch's: no_grad() in one thread leaves autograd on in the others
    enabled = True
    anomaly = False


_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _mode.enabled


def is_anomaly_enabled() -> bool:
    return _mode.anomaly


class _Recording:
    """Context manager (and decorator) that switches graph recording to `self.mode` inside."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = []

    def __enter__(self):
        self.prev.append(_mode.enabled)
        _mode.enabled = self.mode

    def __exit__(self, *exc):
        _mode.enabled = self.prev.pop()
        return False

    def __call__(self, func):
        import functools

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with _Recording(self.mode):
                return func(*args, **kwargs)

        return wrapper


class set_grad_enabled(_Recording):
    """As in PyTorch, also a plain call: `set_grad_enabled(False)` switches recording off until
    switched back on; as a context manager or decorator it switches only inside."""

    def __init__(self, mode: bool):
        super().__init__(mode)
        self.before = _mode.enabled
        _mode.enabled = self.mode

    def __enter__(self):
        self.prev.append(self.before)
        _mode.enabled = self.mode

    def __call__(self, func):
        _mode.enabled = self.before  # a decorator: nothing switches until func runs
        return super().__call__(func)


class no_grad(_Recording):
    """`with no_grad():` or `@no_grad()`: ops inside build no graph."""

    def __init__(self):
        super().__init__(False)


class enable_grad(_Recording):
    def __init__(self):
        super().__init__(True)


class AnomalyError(RuntimeError):
    """An op produced NaN or Inf while `detect_anomaly()` was on."""


class detect_anomaly:
    """Raise at the first op whose forward output or backward gradient holds NaN/Inf.

    Costs one `isfinite` pass per op and a stack capture per op, so use it for debugging only.
    """

    def __enter__(self):
        self.prev = _mode.anomaly
        _mode.anomaly = True

    def __exit__(self, *exc):
        _mode.anomaly = self.prev
        return False


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _user_frame() -> str:
    """The innermost stack frame outside this package: where the user wrote the op."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f'File "{frame.filename}", line {frame.lineno}, in {frame.name}: {frame.line}'
    return "<unknown>"


def _all_finite(a) -> bool:
    a = np.asarray(a)
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())


# ----------------------------------------------------------------------------- Function
class ShapeError(ValueError):
    """Inputs whose shapes (or dtypes) an op cannot combine. The message names the op."""


class Function:
    """One differentiable op. Subclasses define `forward` and `backward` side by side.

    `forward(*arrays, **params)` gets numpy arrays (and Python constants), returns an array and
    stores what backward needs in `self.saved`. `backward(grad)` returns one gradient per
    positional input (a tuple, or a single array for one input); it may return None for inputs
    whose `self.needs_input_grad[i]` is False, and need not reduce broadcast dimensions: the
    engine does that in one place.
    """

    # out_at: (block, t) when forward wrote its output into row t of a `blocks.Block` (the
    # recurrent steps do; `stack` and `share_storage` look for it); unset otherwise
    __slots__ = ("parents", "needs_input_grad", "saved", "created_at", "versions", "seq", "writes",
                 "out_at")

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
            raise AnomalyError(f"{self.name()} produced NaN/Inf in forward at {_user_frame()} "
                               f"(inputs: {describe(args)})")
        return out

    def _record(self, out: np.ndarray, args: tuple, needs: tuple, versions: tuple) -> Tensor:
        """`out` as the Tensor this node made: the graph's edge back to `args`."""
        self.parents = args
        self.needs_input_grad = needs
        self.versions = versions  # what each input's data was, checked again at backward
        self.writes = _WRITES[0]
        self.created_at = _user_frame() if _mode.anomaly else None
        self.seq = next(_creation_order)
        return Tensor._make(out, True, self)


# Numbers recorded nodes in the order they were made. The walk visits the newest node with a
# gradient first: a valid order (consumers are newer than what they consume; no op rebinds an
# existing tensor's _ctx), and one time step's side branches are finished, and their saved
# arrays freed, before the walk moves on to the step before.
_creation_order = itertools.count()


def describe(args) -> str:
    """`(3, 4) float32, (4,) float32` for an op's inputs, used in error messages."""
    parts = []
    for a in args:
        if isinstance(a, (Tensor, np.ndarray)):
            d = a.data if isinstance(a, Tensor) else a
            parts.append(f"{tuple(d.shape)} {d.dtype}")
        else:
            parts.append(repr(a))
    return ", ".join(parts)


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


def share_storage(tensors, rows: np.ndarray) -> None:
    """`rows[i]` holds a copy of `tensors[i]`'s values (what `stack` just made): point each
    recorded tensor, and the nodes among their producers that saved its array, at that row, so
    the originals can be freed. A sequence model stacks its T hidden states for the output
    layer while the graph still holds every one of them for BPTT; sharing halves that memory
    (tests/test_memory.py). Values are equal, so nothing a backward computes changes. Leaves
    keep their arrays: the user owns those. An array some other node also saved (an LSTM's h
    feeds a matmul outside this set) stays alive there: correct, just not freed."""
    new_for = {}
    for t, row in zip(tensors, rows):
        old = t._data
        if t._ctx is not None and (old.base is None or _block_row(t)) \
                and old.shape == row.shape and old.dtype == row.dtype:
            new_for[id(old)] = row
            t._data = row
    if not new_for:
        return
    for t in tensors:
        fn = t._ctx
        if fn is not None and fn.saved is not None:
            saved = fn.saved
            if type(saved) is tuple:
                fn.saved = tuple([new_for.get(id(a), a) for a in saved])
            elif type(saved) is np.ndarray:
                fn.saved = new_for.get(id(saved), saved)


def _block_row(t: Tensor) -> bool:
    """True when t's array is a row its producer wrote into a `blocks.Block`: a view, but of
    memory no other tensor uses, so pointing t elsewhere lets the block go like an own array."""
    at = getattr(t._ctx, "out_at", None)
    return at is not None and at[0].holds(at[1], t._data)


# ----------------------------------------------------------------------------- the walk
class SliceGrad:
    """A gradient that is zero except at `index`: what `x[index]` sends back to `x`.

    Materialising it would cost a zero array of x's full size per slice, so reading a
    length-T sequence step by step would cost O(T^2) in backward. The engine instead adds
    `values` into one buffer per input, in place."""

    __slots__ = ("shape", "dtype", "index", "values", "basic")

    def __init__(self, shape, dtype, index, values, basic: bool):
        self.shape, self.dtype, self.index, self.values, self.basic = shape, dtype, index, values, basic

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype)

    def add_into(self, buf: np.ndarray) -> None:
        if self.basic:
            buf[self.index] += self.values  # a basic index never repeats an element
        else:
            np.add.at(buf, self.index, self.values)  # integer arrays may repeat: accumulate


class ColumnGrad:
    """A gradient `a.T @ one_hot(ids)`: what a product with one-hot rows, given as token ids
    (B,), sends back to the (H, I) weight: row b of `a` (B, H) lands in column ids[b].

    Like SliceGrad it is added into one buffer per weight, here a Fortran-ordered one, so that
    each row of `a` adds into contiguous memory (its transpose's row ids[b]). With `a_at` (see
    OuterGrad) the engine defers it and scatters all steps' rows in one call."""

    __slots__ = ("shape", "dtype", "ids", "a", "a_at")

    def __init__(self, shape, ids: np.ndarray, a: np.ndarray, a_at: tuple = None):
        self.shape, self.dtype, self.ids, self.a, self.a_at = shape, a.dtype, ids, a, a_at

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype, order="F")

    def add_into(self, buf: np.ndarray) -> None:
        K.scatter_add_rows_into(buf.T, self.ids, self.a)

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        return _columns(run[0].shape, np.concatenate([p.ids for p in reversed(run)]), _a_rows(run))


def _columns(shape: tuple, ids: np.ndarray, a: np.ndarray) -> np.ndarray:
    """a.T @ one_hot(ids) as a new Fortran-ordered array of `shape` (see ColumnGrad)."""
    buf = np.zeros(shape, a.dtype, order="F")
    K.scatter_add_rows_into(buf.T, ids, a)
    return buf


_SCATTERED = (SliceGrad, ColumnGrad)  # gradients the walk adds into a buffer it owns


class RowSumGrad:
    """A gradient `a.sum(0)`: what a bias added to every row of `a` receives. Alone it is summed
    at once; with `a_at` (see OuterGrad) the engine defers it and sums all steps' rows in one pass.
    `shared`: the op hands this one object to two inputs (a recurrent step's b_ih and b_hh)."""

    __slots__ = ("a", "a_at", "shared")

    def __init__(self, a: np.ndarray, a_at: tuple = None, shared: bool = False):
        self.a, self.a_at, self.shared = a, a_at, shared

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        return K.sum_rows(_a_rows(run))


class OuterGrad:
    """A gradient `a.T @ b` left unevaluated: what `x @ W` sends back to W.

    A recurrent weight is used once per time step, so it receives T such products of B rows
    each. Evaluated one by one they cost T thin GEMMs plus T passes over a weight-sized
    accumulator; the engine instead stacks the rows of every product that reaches one input
    and does a single GEMM (T=64, B=32, H=1024: 53 ms -> 21 ms, measured). It evaluates them
    when the input is visited, or earlier once `_OUTER_ROWS` rows are waiting, which bounds
    the memory the waiting factors hold; products smaller than `_OUTER_MIN_SIZE` elements it
    evaluates at once, unless their `a` is a gradient row (below).

    `a_at`: (twin, t) when a is row t of a walk's gradient twin, as `blocks.grad_row` gave it;
    `b_at`: (block, t) when b may be row t of a `blocks.Block` (a recurrent step's input state,
    written there by the step before). When the waiting factors are rows t, t - 1, ... of one
    twin or block (the walk goes back in time), their join is a view instead of a copy."""

    __slots__ = ("a", "b", "a_at", "b_at")

    def __init__(self, a: np.ndarray, b: np.ndarray, b_at: tuple = None, a_at: tuple = None):
        self.a, self.b, self.a_at, self.b_at = a, b, a_at, b_at

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        return K.matmul(_a_rows(run).T, _b_rows(run))


class RowsGrad:
    """What a run of consecutive recurrent steps sends one weight, as one gradient: rows
    t0..t1 of a walk's gradient twin (the steps' dL/dpre, `blocks.grad_row`), summed over the
    steps against what the weight met in forward. `how` says what that was:

    OUTER    (W_hh) a.T @ states[t0 - 1:t1], each step's input state, rows of `states` (a block);
    COLUMNS  (W_ih fed token ids) a's rows scattered into the columns `ids` picked, as ColumnGrad;
    ROWSUM   (the biases; `shared` as in RowSumGrad) a.sum(0).

    A recurrent step's backward (ops/rnn.py) makes one when the walk reaches the last step of a
    run and extends it (t0 -= 1) at each step before, sending that step's weights no gradient
    of their own: the walk then routes one gradient per weight and run where it routed one per
    step (docs/speed.md). `open` stays True until the walk evaluates it; only then are its
    rows final, so the op extends only open runs. `weight` keeps runs of two weights apart: the
    pair of Tensors the run belongs to, (W, None) for a weight, (b_ih, b_hh) for the biases with
    None for one a step does not need. `a_at` is (twin, t1), so the walk defers it as the other
    kinds whose rows are a twin's."""

    OUTER, COLUMNS, ROWSUM = 0, 1, 2
    __slots__ = ("how", "weight", "twin", "t0", "t1", "states", "ids", "shape", "shared", "open", "a_at")

    def __init__(self, how: int, weight, at: tuple, states=None, ids=None, shape=None, shared: bool = False):
        self.how, self.weight, self.states, self.shape, self.shared = how, weight, states, shape, shared
        self.twin, self.t1 = at
        self.t0, self.a_at, self.open = self.t1, at, True
        self.ids = None if ids is None else [ids]  # the newest step's first, as they arrive

    @property
    def a(self) -> np.ndarray:
        return self.twin[self.t0:self.t1 + 1].reshape(-1, self.twin.shape[-1])

    @staticmethod
    def evaluate(run: list) -> np.ndarray:
        (p,) = run  # never joined with another (_runs)
        p.open = False
        a = p.a
        if p.how == RowsGrad.OUTER:
            return K.matmul(a.T, p.states[p.t0 - 1:p.t1].reshape(-1, a.shape[1]))
        if p.how == RowsGrad.COLUMNS:
            return _columns(p.shape, np.concatenate(p.ids[::-1]), a)
        return K.sum_rows(a)


# Gradients the walk may sum over many uses at once: it defers those whose `a` is a gradient
# row (`a_at`), and products big enough to pay for a copy of their factors (_OUTER_MIN_SIZE).
_DEFERRED = (OuterGrad, RowSumGrad, ColumnGrad, RowsGrad)
_OUTER_ROWS = 4096
_LAZY = _SCATTERED + tuple(k for k in _DEFERRED if k not in _SCATTERED)  # every gradient kind that is not an array
# Below this many weight elements a product whose `a` is not a gradient row is evaluated at
# once: stacking copies of them was 10% slower at H=64 while freed memory went back to the OS
# (page faults on the stacked copies), and has been neutral since tinygrad_rnn/_malloc.py keeps
# it (docs/speed.md).
_OUTER_MIN_SIZE = 128 * 128


def _evaluate_now(pg) -> np.ndarray:
    """A deferrable gradient the walk does not defer, as an array of its own."""
    return (K.matmul(pg.a.T, pg.b) if type(pg) is OuterGrad else K.sum_rows(pg.a))


def _evaluate_deferred(waiting: list, summed: dict) -> np.ndarray:
    """The sum of the gradients waiting for one input: one evaluation per run (below).

    A recurrent step hands its two biases one RowSumGrad (`shared`), so b_ih's and b_hh's lists
    hold the very same objects: `summed` (one per walk) keeps the first such list's sum until
    the second list asks, which then gets a copy instead of a second pass over every step's rows."""
    first = waiting[0]
    shared = type(first) in (RowSumGrad, RowsGrad) and first.shared
    if shared:
        seen = summed.pop(id(first), None)
        if seen is not None and len(seen[0]) == len(waiting) and all(map(operator.is_, seen[0], waiting)):
            return seen[1]
    total = None
    for run in _runs(waiting):
        part = type(run[0]).evaluate(run)
        total = part if total is None else np.add(total, part, out=total)
    if shared:
        summed[id(first)] = (waiting, total.copy())  # a copy: the walk may add into `total`
    return total


def _rows(waiting: list) -> int:
    """The rows the gradients waiting for one input hold (a run's grow after it is listed)."""
    return sum([p.a.shape[0] for p in waiting])


def _joins(prev, at) -> bool:
    """Rows at `prev` and then `at` join as a view (`at` is the row before `prev` in one twin
    or block: the walk goes back in time), or as a copy (neither is such a row)."""
    if at is None or prev is None:
        return at is None and prev is None
    return at[0] is prev[0] and at[1] == prev[1] - 1


def _runs(waiting: list) -> list:
    """The waiting gradients split where the kind changes or where their rows stop joining: a
    first step's state, a new block. (One gradient row may also reach two inputs that are one
    tensor, e.g. w_ih and w_hh both x: the same t twice is no join.)"""
    runs, run = [], [waiting[0]]
    for p in waiting[1:]:
        q = run[-1]
        if type(p) is not type(q) or type(p) is RowsGrad or not _joins(q.a_at, p.a_at) or (
                type(p) is OuterGrad and not _joins(q.b_at, p.b_at)):
            runs.append(run)
            run = []
        run.append(p)
    runs.append(run)
    return runs


def _a_rows(run: list) -> np.ndarray:
    """The a factors of a run, in time order, as one 2-D array: a view of their twin when they
    are its rows (then they follow each other, see _runs), else a copy."""
    at = run[0].a_at
    if len(run) == 1:
        return run[0].a
    if at is None:
        return np.concatenate([p.a for p in reversed(run)])
    twin, t = at
    return twin[t - len(run) + 1:t + 1].reshape(-1, twin.shape[-1])


def _b_rows(run: list) -> np.ndarray:
    """The b factors of a run joined as one 2-D view of their block, or a copy when they are not
    (any more) the rows handed out there."""
    if len(run) == 1:
        return run[0].b
    if run[0].b_at is None:
        return np.concatenate([p.b for p in reversed(run)])
    block, t = run[0].b_at
    joined = blocks.run([p.b for p in reversed(run)], block, t - len(run) + 1)
    if joined is None:
        return np.concatenate([p.b for p in reversed(run)])
    return joined.reshape(-1, joined.shape[-1])


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


_SECOND_BACKWARD = (
    "Trying to backward through the graph a second time (or to use a graph after its saved "
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
    with blocks.walk():  # the recurrent steps' gradient rows are this walk's (blocks.grad_row)
        _walk(root, seed, retain_graph)


def _walk(root: Tensor, seed: np.ndarray, retain_graph: bool) -> None:
    # Visit nodes newest first (see _creation_order); a node joins `ready` with the first
    # gradient, or None, sent to it. `grads` holds what it has received so far.
    anomaly = _mode.anomaly
    grads = {id(root): seed}
    owned = set()  # ids whose gradient array the walk allocated itself and may update in place
    deferred = {}  # id -> gradients waiting to be summed at once (_DEFERRED)
    summed = {}  # see _evaluate_deferred
    leaves = {}  # id -> leaf that received a gradient, in order of first arrival
    if root._ctx is None:
        leaves[id(root)] = root
        ready = []
    else:
        ready = [(-root._ctx.seq, root)]  # seqs are unique, so tensors are never compared
    heappop, heappush = heapq.heappop, heapq.heappush  # the loop below runs once per node
    while ready:
        node = heappop(ready)[1]
        nid = id(node)
        fn = node._ctx
        if fn.parents is None:
            raise RuntimeError(_SECOND_BACKWARD)
        if deferred:
            waiting = deferred.pop(nid, None)
            if waiting:
                _add_dense(grads, owned, nid, _evaluate_deferred(waiting, summed), fresh=True)
        g = grads.pop(nid)
        owned.discard(nid)
        if g is not None:
            if node._hooks:
                g = _run_hooks(node, g)
            if node._retains_grad:
                node.grad = Tensor._make(np.array(g), False, None)
            if fn.writes != _WRITES[0]:  # some tensor was written since this node was made
                _check_versions(fn)
            parent_grads = fn.backward(g)
            if type(parent_grads) is not tuple:
                parent_grads = (parent_grads,)
        else:
            parent_grads = (None,) * len(fn.parents)
        for p, need, pg in zip(fn.parents, fn.needs_input_grad, parent_grads):
            if not need:
                continue
            k = id(p)
            if k not in grads:  # the first share for p
                if p._ctx is None:
                    if pg is None:
                        continue
                    leaves[k] = p
                else:
                    heappush(ready, (-p._ctx.seq, p))
                grads[k] = None
            if pg is None:
                continue
            if anomaly and not _grad_finite(pg):
                raise AnomalyError(f"{fn.name()}Backward produced NaN/Inf; the op was "
                                   f"created at {fn.created_at}")
            kind = type(pg)
            if kind is np.ndarray or kind not in _LAZY:  # an array: the most common kind, tested first
                if pg.shape != p._data.shape:
                    pg = sum_to(pg, p._data.shape)
                _add_dense(grads, owned, k, pg)
            elif kind in _DEFERRED and (pg.a_at is not None or kind is OuterGrad and  # see _DEFERRED
                                        pg.a.shape[1] * pg.b.shape[1] >= _OUTER_MIN_SIZE):
                waiting = deferred.get(k)
                if waiting is None:
                    waiting = deferred[k] = []
                waiting.append(pg)
                if (len(waiting) * pg.a.shape[0] if kind is not RowsGrad else _rows(waiting)) >= _OUTER_ROWS:
                    _add_dense(grads, owned, k, _evaluate_deferred(deferred.pop(k), summed), fresh=True)
            elif kind is OuterGrad or kind is RowSumGrad:
                _add_dense(grads, owned, k, _evaluate_now(pg), fresh=True)
            else:  # _SCATTERED
                prev = grads[k]
                if k not in owned:  # a buffer we may write into: never an op's own array
                    prev = pg.zeros() if prev is None else np.array(prev)
                    owned.add(k)
                pg.add_into(prev)
                grads[k] = prev
        if not retain_graph:
            # free the saved arrays and the edges as soon as the walk has passed them
            fn.parents = None
            fn.saved = None

    # every node is done, so each leaf's gradient is complete (a leaf is listed with its first
    # share that is not None, so each has one)
    for k, leaf in leaves.items():
        waiting = deferred.pop(k, None)
        if waiting:
            _add_dense(grads, owned, k, _evaluate_deferred(waiting, summed), fresh=True)
        g = grads.pop(k)
        if leaf._hooks:  # a hook sees g and may keep it: then g is no longer the walk's alone
            g = _run_hooks(leaf, g)
            owned.discard(k)
        _accumulate_leaf(leaf, g, k in owned)


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


def _grad_finite(pg) -> bool:
    kind = type(pg)
    if kind is SliceGrad:
        return _all_finite(pg.values)
    if kind is OuterGrad:
        return _all_finite(pg.a) and _all_finite(pg.b)
    if kind in _DEFERRED:
        return _all_finite(pg.a)
    return _all_finite(pg)


def _add_dense(grads: dict, owned: set, k: int, pg: np.ndarray, fresh: bool = False) -> None:
    """Sum `pg` into the gradient collected for node `k`, in place when the walk owns it.
    `fresh`: pg was allocated for this sum alone, so later sums may write into it."""
    prev = grads.get(k)
    if prev is None:
        grads[k] = pg
        if fresh:
            owned.add(k)
    elif k in owned:
        prev += pg
    else:
        total = prev + pg
        grads[k] = total if type(total) is np.ndarray else np.asarray(total)  # 0-d sums come back as numpy scalars
        owned.add(k)


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


def _accumulate_leaf(leaf: Tensor, g: np.ndarray, owned: bool) -> None:
    """`owned`: the walk allocated g and nothing else refers to it, so `.grad` may keep it."""
    if g.dtype != leaf.data.dtype:
        g, owned = g.astype(leaf.data.dtype), True
    if leaf.grad is None:
        # otherwise copy: g may alias another gradient (add's backward hands the same array to
        # both sides); and in C order: a ColumnGrad's buffer is Fortran-ordered, optimizers expect C
        if not (owned and g.flags.c_contiguous):
            g = np.array(g, order="C", copy=True)
        leaf.grad = Tensor._make(g, False, None)
    else:
        leaf.grad.data += g
