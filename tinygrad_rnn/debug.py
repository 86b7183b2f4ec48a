"""Study instruments for the engine: an op profiler and a gradient-check runner.

Profiler::

    with tinygrad_rnn.debug.profile() as prof:
        loss = model(x).sum(); loss.backward()
    print(prof)            # per op type: calls, forward, backward and kernel time; by total time

`TINYGRAD_RNN_DEBUG=1` profiles the whole process and prints the table to stderr at exit.

The profiler costs nothing while it is off: nothing in the engine checks for it. While on, it
replaces `Function.apply`, every `Function` subclass's `backward`, `autograd.backward` and
the active backend's kernels (`kernels.K`) with timing wrappers, and puts the originals back
when the last active profile exits. Times are wall-clock and inclusive: an op's forward time
contains the kernels it called, which the kernel column shows apart. Kernels a Function did
not call are listed under "(backward engine)" (the walk's own work, e.g. batched weight
gradients) or "(no op)" (the optimizer, say). Ops whose class is defined after the profile
starts are counted forward only; a `set_backend` call inside a profile stops kernel timing.
The bookkeeping is process-wide and meant for one thread. Starting a profile loads the kernels
(and numba), so under TINYGRAD_RNN_DEBUG=1 `import tinygrad_rnn` does too.
"""
from __future__ import annotations

import atexit
import os
import sys
import time
from dataclasses import dataclass

__all__ = ["profile", "OpStats", "check_gradients", "format_checks"]

ENGINE = "(backward engine)"
NO_OP = "(no op)"


@dataclass
class OpStats:
    calls: int = 0
    forward_s: float = 0.0
    backward_calls: int = 0
    backward_s: float = 0.0
    kernel_calls: int = 0
    kernel_s: float = 0.0

    @property
    def total_s(self) -> float:
        # an op's kernels run inside its forward/backward; the engine's rows only have kernels
        return self.forward_s + self.backward_s if self.calls or self.backward_calls else self.kernel_s


class profile:
    """Context manager counting and timing ops, their backwards and the kernels they call.

    Profiles nest: every active profile receives every record.
    """

    def __init__(self):
        self.ops: dict[str, OpStats] = {}
        self.kernels: dict[str, list] = {}  # name -> [calls, seconds]
        self.backward_calls = 0  # Tensor.backward() / autograd.backward() walks
        self.backward_s = 0.0
        self.wall_s = 0.0
        self._t0 = None

    def __enter__(self) -> "profile":
        if not _active:
            _patches.install()
        _active.append(self)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s += time.perf_counter() - self._t0
        _active.remove(self)
        if not _active:
            _patches.uninstall()
        return False

    def _op(self, name: str) -> OpStats:
        stats = self.ops.get(name)
        if stats is None:
            stats = self.ops[name] = OpStats()
        return stats

    def table(self, limit: int | None = None) -> str:
        """The op table sorted by total (forward + backward) time, then the kernel table."""
        rows = sorted(self.ops.items(), key=lambda kv: (-kv[1].total_s, -kv[1].kernel_s, kv[0]))
        if limit is not None:
            rows = rows[:limit]
        width = max([len(n) for n, _ in rows] + [len("op")])
        lines = [f"{'op':<{width}}  {'calls':>7}  {'forward ms':>10}  {'bwd calls':>9}  {'backward ms':>11}"
                 f"  {'kernel ms':>9}  {'total ms':>9}"]
        for name, s in rows:
            lines.append(f"{name:<{width}}  {s.calls:>7}  {s.forward_s * 1e3:>10.3f}  {s.backward_calls:>9}"
                         f"  {s.backward_s * 1e3:>11.3f}  {s.kernel_s * 1e3:>9.3f}  {s.total_s * 1e3:>9.3f}")
        op_s = sum(s.total_s for s in self.ops.values())
        lines.append(f"{sum(s.calls for s in self.ops.values())} op calls, {op_s * 1e3:.3f} ms in ops; "
                     f"{self.backward_calls} backward() walks, {self.backward_s * 1e3:.3f} ms; "
                     f"{self.wall_s * 1e3:.3f} ms wall time profiled")
        if self.kernels:
            kw = max(len(n) for n in self.kernels)
            lines += ["", f"{'kernel':<{kw}}  {'calls':>7}  {'total ms':>9}  {'mean us':>8}"]
            for name, (calls, secs) in sorted(self.kernels.items(), key=lambda kv: -kv[1][1]):
                lines.append(f"{name:<{kw}}  {calls:>7}  {secs * 1e3:>9.3f}  {secs / calls * 1e6:>8.2f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


_active: list[profile] = []
_current: list[str] = []  # the op (or engine) whose code is running: who called a kernel


# ----------------------------------------------------------------------------- the records
def _record_forward(name: str, seconds: float) -> None:
    for p in _active:
        s = p._op(name)
        s.calls += 1
        s.forward_s += seconds


def _record_backward(name: str, seconds: float) -> None:
    for p in _active:
        s = p._op(name)
        s.backward_calls += 1
        s.backward_s += seconds


def _record_kernel(kernel: str, seconds: float) -> None:
    owner = _current[-1] if _current else NO_OP
    for p in _active:
        s = p._op(owner)
        s.kernel_calls += 1
        s.kernel_s += seconds
        k = p.kernels.setdefault(kernel, [0, 0.0])
        k[0] += 1
        k[1] += seconds


def _record_walk(seconds: float) -> None:
    for p in _active:
        p.backward_calls += 1
        p.backward_s += seconds


# ----------------------------------------------------------------------------- the wrappers
def _timed_apply(original):
    def apply(cls, *args, **kwargs):
        name = cls.name()
        _current.append(name)
        t0 = time.perf_counter()
        try:
            return original(cls, *args, **kwargs)
        finally:
            _record_forward(name, time.perf_counter() - t0)
            _current.pop()
    return classmethod(apply)


def _timed_backward(original):
    def backward(self, grad):
        name = type(self).name()
        _current.append(name)
        t0 = time.perf_counter()
        try:
            return original(self, grad)
        finally:
            _record_backward(name, time.perf_counter() - t0)
            _current.pop()
    return backward


def _timed_walk(original):
    def backward(*args, **kwargs):
        _current.append(ENGINE)
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _record_walk(time.perf_counter() - t0)
            _current.pop()
    return backward


def _timed_kernel(name, original):
    def kernel(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _record_kernel(name, time.perf_counter() - t0)
    kernel.__wrapped__ = original
    return kernel


def _function_classes():
    from .autograd import Function

    seen, stack = [], [Function]
    while stack:  # iterative: class trees are shallow, but there is no reason to recurse
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen


class _Patches:
    """Every attribute the profiler replaced, with its original, so uninstall is exact."""

    def __init__(self):
        self.saved = []  # (owner, attribute, original, wrapper)

    def _replace(self, owner, attr, wrapper) -> None:
        self.saved.append((owner, attr, owner.__dict__[attr], wrapper))
        setattr(owner, attr, wrapper)

    def install(self) -> None:
        from . import autograd
        from .kernels import K, get_backend

        for cls in _function_classes():
            if "apply" in cls.__dict__:
                self._replace(cls, "apply", _timed_apply(cls.__dict__["apply"].__func__))
            if "backward" in cls.__dict__ and cls is not autograd.Function:
                self._replace(cls, "backward", _timed_backward(cls.__dict__["backward"]))
        self._replace(autograd, "backward", _timed_walk(autograd.backward))
        get_backend()  # loads the kernels, so there is something to wrap
        for name, fn in list(vars(K).items()):
            if not name.startswith("_") and callable(fn):
                self._replace(K, name, _timed_kernel(name, fn))

    def uninstall(self) -> None:
        while self.saved:
            owner, attr, original, wrapper = self.saved.pop()
            # set_backend() inside a profile rebinds the kernels: keep what it bound
            if owner.__dict__.get(attr) is wrapper:
                setattr(owner, attr, original)


_patches = _Patches()


def _profile_process() -> None:
    prof = profile().__enter__()

    def report():
        prof.__exit__(None, None, None)
        print("\ntinygrad_rnn profile (TINYGRAD_RNN_DEBUG=1)\n" + prof.table(), file=sys.stderr)

    atexit.register(report)


# ----------------------------------------------------------------------------- gradient checks
@dataclass
class CheckResult:
    name: str
    shapes: str  # input shapes of the example with the largest error
    examples: int
    max_abs: float
    max_rel: float
    passed: bool
    message: str = ""


def _jacobian_errors(fn, inputs, eps: float, atol: float):
    """(max |analytic - numeric|, max relative error) over every input's full Jacobian.

    The relative error is |a - n| / |n| where |n| > atol; smaller entries are judged by the
    absolute error alone, as gradcheck's `atol + rtol * |n|` rule does."""
    import numpy as np

    from .gradcheck import _analytic, _numeric, _outputs  # the same two sides gradcheck compares
    from .tensor import Tensor

    leaves = [Tensor(np.array(t.data, copy=True, order="C"), requires_grad=True) if t.requires_grad else t
              for t in inputs]
    wrt = [(i, t) for i, t in enumerate(leaves) if t.requires_grad]
    sizes = [o.data.size for o in _outputs(fn(*leaves))]
    eye = np.eye(sum(sizes))
    numeric = [_numeric(fn, leaves, t, eye, eps) for _, t in wrt]
    worst_abs = worst_rel = 0.0
    for row, v in enumerate(eye):
        for a, n in zip(_analytic(fn, leaves, wrt, v, sizes), numeric):
            diff = np.abs(a - n[row])
            if diff.size:
                worst_abs = max(worst_abs, float(diff.max()))
                big = np.abs(n[row]) > atol
                if big.any():
                    worst_rel = max(worst_rel, float((diff[big] / np.abs(n[row][big])).max()))
    return worst_abs, worst_rel


def _check_case(fn, inputs, eps, atol, rtol):
    """(max_abs, max_rel, passed, message) for one example, gradcheck deciding pass/fail."""
    from .gradcheck import GradcheckError, gradcheck

    try:
        gradcheck(fn, inputs, eps=eps, atol=atol, rtol=rtol)
        passed, message = True, ""
    except GradcheckError as e:
        passed, message = False, str(e)
    except Exception as e:  # the op itself crashed: a failure to report, not to hide
        return float("nan"), float("nan"), False, f"{type(e).__name__}: {e}"
    abs_err, rel_err = _jacobian_errors(fn, inputs, eps, atol)
    return abs_err, rel_err, passed, message


def _worse(a: float, b: float) -> float:
    return a if a != a else max(a, b) if b == b else b  # NaN (the op crashed) sticks


def _shapes_of(inputs) -> str:
    return " ".join(str(tuple(t.shape)).replace(" ", "") for t in inputs)


def _check_op(spec, examples: int, seed: int, eps, atol, rtol) -> CheckResult:
    """`examples` hypothesis draws of the row's shapes and values (seeded, no shrinking)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from .op_table import draw_values
    from .tensor import Tensor

    result = CheckResult(spec.name, "", 0, 0.0, 0.0, True)
    worst = (-1.0, -1)

    @hypothesis_seed(seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(data=st.data())
    def run(data):
        nonlocal worst
        shapes, kwargs = data.draw(spec.shapes)
        inputs = [Tensor(a, requires_grad=True) for a in draw_values(data, spec.domains(), shapes)]
        abs_err, rel_err, passed, message = _check_case(lambda *ts: spec.fn(*ts, **kwargs), inputs, eps, atol, rtol)
        result.examples += 1
        key = (abs_err, sum(t.data.size for t in inputs))
        if result.passed and (not passed or key > worst):
            worst, result.shapes = key, _shapes_of(inputs)
        result.max_abs, result.max_rel = _worse(result.max_abs, abs_err), _worse(result.max_rel, rel_err)
        if result.passed and not passed:
            result.passed, result.message = False, message

    run()
    return result


def _check_cell(cell, seed: int, eps, atol, rtol) -> CheckResult:
    import numpy as np

    fn, inputs = cell.case(np.random.default_rng(seed))
    abs_err, rel_err, passed, message = _check_case(fn, inputs, eps, atol, rtol)
    return CheckResult(cell.name, _shapes_of(inputs), 1, abs_err, rel_err, passed, message)


def check_gradients(pattern: str | None = None, seed: int = 0, examples: int = 3, eps: float = 1e-6,
                    atol: float = 1e-5, rtol: float = 1e-3, progress=None) -> list[CheckResult]:
    """Gradcheck every op of the op table (`examples` seeded hypothesis draws each) and every
    unrolled recurrent cell (seeded uniform values), in float64 with gradcheck's tolerances.

    `pattern` (a shell pattern such as "matmul*") selects rows by name. Needs hypothesis.
    """
    from fnmatch import fnmatchcase

    from .op_table import CELLS, OPS

    def chosen(name):
        return pattern is None or fnmatchcase(name, pattern)

    ops = [s for s in OPS if chosen(s.name)]
    cells = [c for c in CELLS if chosen(c.name)]
    if not ops and not cells:
        names = ", ".join([s.name for s in OPS] + [c.name for c in CELLS])
        raise ValueError(f"gradcheck: no op matches {pattern!r}; the table has: {names}")
    results = []
    for spec in ops:
        results.append(_check_op(spec, examples, seed, eps, atol, rtol))
        if progress:
            progress(results[-1])
    for cell in cells:
        results.append(_check_cell(cell, seed, eps, atol, rtol))
        if progress:
            progress(results[-1])
    return results


def format_checks(results) -> str:
    """One line per check: op, input shapes, examples, max abs and rel error, PASS/FAIL."""
    nw = max([len(r.name) for r in results] + [2])
    sw = max([len(r.shapes) for r in results] + [6])
    lines = [f"{'op':<{nw}}  {'shapes':<{sw}}  {'n':>2}  {'max abs err':>11}  {'max rel err':>11}  result"]
    for r in results:
        lines.append(f"{r.name:<{nw}}  {r.shapes:<{sw}}  {r.examples:>2}  {r.max_abs:>11.2e}  "
                     f"{r.max_rel:>11.2e}  {'pass' if r.passed else 'FAIL'}")
    failed = [r for r in results if not r.passed]
    lines.append(f"{len(results) - len(failed)} of {len(results)} passed")
    for r in failed:
        lines.append(f"FAIL {r.name}: {r.message}")
    return "\n".join(lines)


if os.environ.get("TINYGRAD_RNN_DEBUG", "0") not in ("", "0"):
    _profile_process()
