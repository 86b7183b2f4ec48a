"""The engine itself: graph walk, accumulation, retain_graph, grad mode, hooks, anomaly mode,
tensor construction rules, and the classic autograd bugs, each pinned by a regression test."""
import contextlib
import gc
import os
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Function, Tensor
from tolerances import EXACT64, GRADCHECK

# every engine test runs on the fast path and on the plain one (tests/modes.py)
pytestmark = pytest.mark.usefixtures("mode")

# A tolerance's comment gives the largest error seen over 3 runs with fresh random data, as a
# fraction of what it allows and as |error| (measure: python tests/measure_tolerances.py tests/test_engine.py)


def f64(x, requires_grad=True):
    return Tensor(np.asarray(x, dtype=np.float64), requires_grad=requires_grad)


# ----------------------------------------------------------------------------- classic bugs
def test_reused_node_accumulates():
    a = f64(3.0)
    b = a + a
    c = b + b
    c.backward()
    assert a.grad.item() == 4.0


def test_diamond():
    x = f64(1.5)
    y1, y2 = x * 2.0, x * 3.0
    z = y1 * y2  # 6 x^2
    z.backward()
    assert x.grad.item() == pytest.approx(12 * 1.5, rel=EXACT64)  # exact in every run


def test_consumers_outside_the_backward_graph_do_not_hold_a_node_back():
    # the walk counts no consumers: `a` has three, one of them (a + 1) outside loss's graph,
    # and it is visited once, after both consumers inside the graph (paths of length 1 and 3)
    x = f64([0.5, -1.0])
    a = x * x
    unused = a + 1.0  # noqa: F841 - a consumer the walk must not wait for
    long_path = ((a * 2.0).tanh() * 3.0)
    loss = (a + long_path).sum()
    loss.backward()
    expect = 2 * x.data * (1 + 6 * (1 - np.tanh(2 * x.data ** 2) ** 2))
    np.testing.assert_allclose(x.grad.data, expect, rtol=EXACT64)  # exact in every run
    assert unused._ctx.parents is not None  # not walked, so not freed


def test_same_tensor_on_both_sides_of_one_op():
    x = f64([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data, rtol=EXACT64)  # exact in every run


def test_ten_thousand_step_chain_has_no_recursion_error():
    x = f64(1.0)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    # largest error seen: 1.0e-14 relative
    assert x.grad.item() == pytest.approx(1.0001 ** 10_000, rel=5e-13)


def test_two_thousand_step_tanh_recurrence_matches_manual_bptt():
    rng = np.random.default_rng(0)
    T = 2000
    xs = rng.standard_normal(T) * 0.5
    w = f64(0.9)
    h = f64(0.0, requires_grad=False)
    hs = []
    for t in range(T):
        h = (h * w + float(xs[t])).tanh()
        hs.append(h.item())
    h.backward()
    # by hand: dL/dh_T = 1; dh_t/dw = (1 - h_t^2) h_{t-1}; dh_t/dh_{t-1} = (1 - h_t^2) w
    dh, dw, prev = 1.0, 0.0, [0.0] + hs[:-1]
    for t in reversed(range(T)):
        draw = dh * (1 - hs[t] ** 2)
        dw += draw * prev[t]
        dh = draw * 0.9
    assert w.grad.item() == pytest.approx(dw, rel=EXACT64)  # exact in every run


def test_second_backward_without_retain_graph_raises():
    x = f64([1.0, 2.0])
    y = x.tanh().sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward_and_grads_accumulate():
    x = f64([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.data, 4 * x.data)


def test_leaf_grad_accumulates_until_zeroed():
    w = f64([1.0, 2.0])
    for _ in range(3):
        (w * 2.0).sum().backward()
    np.testing.assert_array_equal(w.grad.data, [6.0, 6.0])
    w.grad = None
    (w * 2.0).sum().backward()
    np.testing.assert_array_equal(w.grad.data, [2.0, 2.0])


def test_leaf_grads_do_not_alias_each_other():
    # add's backward hands one array to both inputs; accumulating into one leaf must not touch the other
    a, b = f64([1.0]), f64([2.0])
    (a + b).sum().backward()
    a.grad.data += 100
    assert b.grad.item() == 1.0


def test_saved_arrays_and_intermediates_are_freed_after_backward():
    x = f64(np.ones(10))
    y = x.tanh()
    ref = weakref.ref(y)
    loss = y.sum()
    del y
    loss.backward()
    gc.collect()
    assert ref() is None
    assert loss._ctx.saved is None


def test_graph_is_kept_with_retain_graph():
    x = f64(np.ones(3))
    y = x.tanh()
    ref = weakref.ref(y)
    loss = y.sum()
    del y
    loss.backward(retain_graph=True)
    assert ref() is not None


def test_nonscalar_root_needs_explicit_gradient():
    x = f64([1.0, 2.0])
    y = x * 2.0
    with pytest.raises(RuntimeError, match="scalar outputs"):
        y.backward()
    with pytest.raises(ValueError, match=r"gradient shape \(3,\)"):
        y.backward(np.ones(3))
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad.data, [2.0, 20.0])


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()


class _RecordingMul(Function):
    """x * y that records which input gradients the engine asked for."""

    asked = []

    def forward(self, a, b):
        self.saved = (a, b)
        return a * b

    def backward(self, g):
        _RecordingMul.asked.append(self.needs_input_grad)
        a, b = self.saved
        return (g * b if self.needs_input_grad[0] else None), (g * a if self.needs_input_grad[1] else None)


def test_inputs_without_requires_grad_get_no_gradient():
    _RecordingMul.asked.clear()
    x, w = Tensor(np.ones(3)), f64(np.full(3, 2.0))
    _RecordingMul.apply(x, w).sum().backward()
    assert _RecordingMul.asked == [(False, True)]
    assert x.grad is None
    np.testing.assert_array_equal(w.grad.data, np.ones(3))


def test_branch_that_does_not_need_grad_is_not_walked():
    x = Tensor(np.ones(3))  # constant branch: no graph is recorded for it at all
    c = (x * 2.0).tanh()
    assert c._ctx is None and not c.requires_grad


def test_broadcast_gradients_are_reduced_to_the_input_shape():
    a = f64(np.ones((3, 1)))
    b = f64(np.ones((4,)))
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_array_equal(a.grad.data, np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad.data, np.full(4, 3.0))


# ----------------------------------------------------------------------------- grad mode
def test_no_grad_builds_no_graph():
    w = f64([1.0, 2.0])
    with tg.no_grad():
        y = (w * 2.0).tanh()
    assert y._ctx is None and not y.requires_grad
    assert tg.is_grad_enabled()


def test_no_grad_as_decorator_and_enable_grad_inside():
    w = f64([1.0])

    @tg.no_grad()
    def f():
        inner = w * 2.0
        with tg.enable_grad():
            outer = w * 3.0
        return inner, outer

    inner, outer = f()
    assert not inner.requires_grad and outer.requires_grad
    assert tg.is_grad_enabled()


def test_grad_mode_is_thread_local():
    w = f64([1.0])
    inside, started, release = {}, threading.Event(), threading.Event()

    def other_thread():
        started.wait()
        inside["requires_grad"] = (w * 2.0).requires_grad
        release.set()

    th = threading.Thread(target=other_thread)
    th.start()
    with tg.no_grad():
        started.set()
        release.wait(5)
    th.join()
    assert inside["requires_grad"] is True


def test_detach_cuts_the_graph():
    w = f64([1.0, 2.0])
    h = (w * 2.0).detach()
    assert h._ctx is None and not h.requires_grad
    y = (h * w).sum()
    y.backward()
    np.testing.assert_array_equal(w.grad.data, h.data)  # no path through h


def test_requires_grad_rules():
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2, 3], requires_grad=True)
    t = Tensor([1.0]).requires_grad_()
    assert t.requires_grad and t.is_leaf
    y = t * 2.0
    with pytest.raises(RuntimeError, match="detach"):
        y.requires_grad_(False)


# ----------------------------------------------------------------------------- hooks
def test_hooks_run_in_order_and_can_replace_the_gradient():
    x = f64([1.0, 2.0])
    y = x * 3.0
    calls = []
    y.register_hook(lambda g: calls.append(("first", g.data.copy())) or g * 2.0)
    y.register_hook(lambda g: calls.append(("second", g.data.copy())))
    y.sum().backward()
    assert [c[0] for c in calls] == ["first", "second"]
    np.testing.assert_array_equal(calls[1][1], [2.0, 2.0])  # second sees first's replacement
    np.testing.assert_array_equal(x.grad.data, [6.0, 6.0])


def test_hook_removal_and_leaf_hooks():
    x = f64([1.0])
    handle = x.register_hook(lambda g: g * 10.0)
    (x * 1.0).sum().backward()
    assert x.grad.item() == 10.0
    handle.remove()
    x.grad = None
    (x * 1.0).sum().backward()
    assert x.grad.item() == 1.0


def test_a_leafs_grad_shares_memory_with_no_other_gradient_or_hook():
    # the walk hands a leaf the array it summed into when nothing else holds it; anything a
    # hook saw, or that another leaf received, must stay a separate copy
    x, w, b = f64([[1.0, 2.0], [3.0, 4.0]]), f64([[0.5], [-1.0]]), f64([0.25])
    seen = []
    b.register_hook(lambda g: seen.append(g))
    y = x @ w + b
    (y * y).sum().backward()
    grads = [x.grad.data, w.grad.data, b.grad.data]
    for i, g in enumerate(grads):
        assert g.flags.c_contiguous
        assert not any(np.shares_memory(g, other) for other in grads[i + 1:])
    assert not np.shares_memory(seen[0].data, b.grad.data)
    kept = seen[0].data.copy()
    b.grad.data += 1.0
    np.testing.assert_array_equal(seen[0].data, kept)


def test_hook_with_wrong_shape_is_refused():
    x = f64([1.0, 2.0])
    y = x * 1.0
    y.register_hook(lambda g: np.ones(3))
    with pytest.raises(ValueError, match="hook"):
        y.sum().backward()


def test_retain_grad_on_intermediate():
    x = f64([1.0, 2.0])
    y = x * 3.0
    y.retain_grad()
    (y * y).sum().backward()
    np.testing.assert_array_equal(y.grad.data, 2 * y.data)


# ----------------------------------------------------------------------------- anomaly mode
def test_detect_anomaly_names_the_forward_op_and_the_line():
    x = f64([-1.0, 1.0])
    with tg.detect_anomaly():
        with np.errstate(invalid="ignore"), pytest.raises(tg.AnomalyError, match=r"Log.*test_engine\.py"):
            x.log()


def test_detect_anomaly_in_backward_names_the_op_and_where_it_was_created():
    x = f64([0.0, 1.0])
    with tg.detect_anomaly():
        y = x.sqrt().sum()  # finite forward, infinite derivative at 0
        with np.errstate(divide="ignore"), pytest.raises(tg.AnomalyError, match=r"SqrtBackward.*test_engine\.py"):
            y.backward()


def test_without_anomaly_mode_nans_are_plain_values():
    x = f64([-1.0])
    with np.errstate(invalid="ignore"):
        y = x.log()
    assert np.isnan(y.item())


# ----------------------------------------------------------------------------- Tensor basics
def test_construction_dtypes():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor([[1, 2]]).dtype == np.int64
    assert Tensor(np.ones(2)).dtype == np.float64
    assert Tensor(np.ones(2, np.float32)).dtype == np.float32
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64


def test_mixed_float_widths_raise_naming_the_op():
    with pytest.raises(tg.ShapeError, match=r"mul: dtype mismatch \(float32 vs float64\)"):
        Tensor([1.0]) * Tensor(np.ones(1))
    # numbers adopt the tensor's dtype, numpy float64 scalars included
    assert (Tensor([1.0]) * np.float64(2.0)).dtype == np.float32
    assert (2.5 * Tensor([1.0])).dtype == np.float32


def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(tg.ShapeError, match=r"Add.*\(2, 3\) float32.*\(4,\) float32"):
        tg.zeros(2, 3) + tg.zeros(4)
    with pytest.raises(tg.ShapeError, match=r"MatMul.*\(2, 3\).*\(4, 5\)"):
        tg.zeros(2, 3) @ tg.zeros(4, 5)


def test_basic_accessors_and_repr():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert t.shape == (2, 2) and t.ndim == 2 and len(t) == 2 and t.numel() == 4
    assert isinstance(t.numpy(), np.ndarray) and np.asarray(t).shape == (2, 2)
    assert t[1, 1].item() == 4.0
    assert "requires_grad=True" in repr(t)
    assert "grad_fn=<TanhBackward>" in repr(t.tanh())
    assert "dtype=float64" in repr(Tensor(np.ones(1)))
    with pytest.raises(ValueError, match="one-element"):
        t.item()


def test_reflected_operators_and_numpy_on_the_left():
    x = f64([2.0, 4.0])
    np.testing.assert_array_equal((2.0 - x).data, [0.0, -2.0])  # exact in binary floating point
    np.testing.assert_array_equal((1.0 / x).data, [0.5, 0.25])
    np.testing.assert_array_equal((np.array([1.0, 1.0]) + x).data, [3.0, 5.0])
    assert isinstance(np.array([1.0, 1.0]) * x, Tensor)


def test_factories_and_manual_seed():
    assert tg.zeros(2, 3).shape == (2, 3) and tg.ones((2,)).data.sum() == 2
    assert tg.full((2, 2), 7.0).data.max() == 7.0
    np.testing.assert_array_equal(tg.eye(3).data, np.eye(3, dtype=np.float32))
    assert tg.arange(5).dtype == np.int64 and tg.arange(0.0, 1.0, 0.25).shape == (4,)
    assert tg.zeros_like(tg.ones(3)).data.sum() == 0 and tg.ones_like(tg.zeros(2, 2)).shape == (2, 2)
    tg.manual_seed(123)
    a, b = tg.randn(4), tg.rand(4)
    tg.manual_seed(123)
    np.testing.assert_array_equal(a.data, tg.randn(4).data)
    np.testing.assert_array_equal(b.data, tg.rand(4).data)
    assert ((b.data >= 0) & (b.data < 1)).all() and a.dtype == np.float32


# ----------------------------------------------------------------------------- backends
def _rnn_like(backend):
    tg.set_backend(backend)
    try:
        rng = np.random.default_rng(1)
        W = f64(rng.standard_normal((5, 5)) * 0.5)
        U = f64(rng.standard_normal((3, 5)) * 0.5)
        h = f64(np.zeros((2, 5)), requires_grad=False)
        xs = rng.standard_normal((4, 2, 3))
        for t in range(4):
            h = (Tensor(xs[t]) @ U + h @ W).tanh()
        logits = h @ W.T
        loss = tg.nn.functional.cross_entropy(logits, np.array([1, 4])) + h.sigmoid().sum()
        loss.backward()
        return loss.item(), W.grad.data, U.grad.data
    finally:
        tg.set_backend("numba")


def test_numpy_backend_gives_the_same_numbers():
    a, b = _rnn_like("numba"), _rnn_like("numpy")
    assert a[0] == pytest.approx(b[0], rel=EXACT64)  # exact in every run, as below
    np.testing.assert_allclose(a[1], b[1], rtol=EXACT64)
    np.testing.assert_allclose(a[2], b[2], rtol=EXACT64)


def test_backend_from_environment_variable():
    code = "import tinygrad_rnn as tg; tg.ones(2).tanh(); print(tg.get_backend())"
    env = dict(os.environ, TINYGRAD_RNN_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    with pytest.raises(ValueError, match="unknown backend"):
        tg.set_backend("cuda")


# ----------------------------------------------------------------------------- gradcheck
class _WrongSquare(Function):
    def forward(self, a):
        self.saved = a
        return a * a

    def backward(self, g):
        return g * 3 * self.saved  # should be 2 * a


def test_gradcheck_catches_a_wrong_backward_and_names_the_element():
    x = f64([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(tg.GradcheckError, match=r"input 0 \(shape \(2, 2\)\) at element \(0, 0\).*analytic 3\.0"):
        tg.gradcheck(lambda a: _WrongSquare.apply(a), (x,))
    assert tg.gradcheck(lambda a: _WrongSquare.apply(a), (x,), raise_exception=False) is False
    assert tg.gradcheck(lambda a: a * a, (x,), **GRADCHECK)


def test_gradcheck_random_projections_for_large_inputs():
    rng = np.random.default_rng(0)
    x = f64(rng.standard_normal((40, 30)))
    w = f64(rng.standard_normal((30, 20)))
    assert tg.gradcheck(lambda a, b: (a @ b).tanh(), (x, w), **GRADCHECK)  # 800 outputs x 1800 inputs: projected
    with pytest.raises(tg.GradcheckError, match="random output projection"):
        tg.gradcheck(lambda a: _WrongSquare.apply(a) @ w, (x,))


def test_gradcheck_refuses_float32_and_restores_grads():
    with pytest.raises(TypeError, match="float64"):
        tg.gradcheck(lambda a: a * 2.0, (Tensor([1.0], requires_grad=True),))
    x = f64([1.0])
    x.grad = Tensor(np.array([5.0]))
    tg.gradcheck(lambda a: a * 2.0, (x,))
    assert x.grad.item() == 5.0


def test_gradcheck_accepts_non_leaf_inputs():
    x = Tensor([[1.0, -2.0]], requires_grad=True).double()  # a Cast output, not a leaf
    assert not x.is_leaf
    assert tg.gradcheck(lambda a: (a * a).tanh(), (x,), **GRADCHECK)


def test_slice_gradients_mix_with_dense_ones_without_aliasing():
    # slices send sparse gradients that the engine adds in place; dense gradients handed to two
    # parents at once (y + y) must not be written into
    x = f64(np.random.default_rng(3).standard_normal((4, 3)))

    def f(a):
        y = a * 1.0
        z = y + y
        return (z * z).sum() + y[1].sum() + y[[0, 0, 2]].sum() + y[1:3].tanh().sum() + y[..., 0].sum()

    assert tg.gradcheck(f, (x,), **GRADCHECK)


def test_reading_a_sequence_step_by_step_gets_every_slice_gradient():
    x = f64(np.random.default_rng(4).standard_normal((50, 2, 3)))
    h = Tensor(np.zeros((2, 3)))
    for t in range(50):
        h = (h + x[t]).tanh()
    h.sum().backward()
    assert x.grad.shape == (50, 2, 3) and np.all(x.grad.data != 0)


class _NanGrad(Function):
    def forward(self, a):
        return a * 1.0

    def backward(self, g):
        return g * np.nan


def test_gradcheck_fails_on_nan_gradients():
    with pytest.raises(tg.GradcheckError, match="analytic nan"):
        tg.gradcheck(lambda a: _NanGrad.apply(a), (f64([1.0, 2.0]),))


def test_logsumexp_of_an_all_minus_inf_row_has_zero_gradient():
    x = f64([[-np.inf, -np.inf], [0.0, 1.0]])
    y = x.logsumexp(1)
    assert y.data[0] == -np.inf
    y.sum().backward()
    assert np.isfinite(x.grad.data).all() and x.grad.data[0].tolist() == [0.0, 0.0]


def test_weight_gradients_summed_in_one_product_equal_the_per_step_sum(monkeypatch):
    """A weight used in many matmuls gets its per-use products a.T @ g evaluated together
    (fast/lazy.py OuterGrad) when it is large enough to pay; with a small row budget the fast
    accumulator also flushes them in batches. The plain path sums them one by one."""
    from tinygrad_rnn.fast import accumulate

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 5)) * 0.3
    xs = [rng.standard_normal((3, 5)) for _ in range(40)]
    # (min size, rows): evaluated at once; stacked until visited; stacked and flushed every third product
    for plain, min_size, rows in ((False, accumulate.OUTER_MIN_SIZE, accumulate.OUTER_ROWS),
                                  (False, 0, accumulate.OUTER_ROWS), (False, 0, 7), (True, 0, 7)):
        monkeypatch.setattr(accumulate, "OUTER_MIN_SIZE", min_size)
        monkeypatch.setattr(accumulate, "OUTER_ROWS", rows)
        mode = tg.fast.disabled() if plain else contextlib.nullcontext()
        with mode:
            w = f64(w0)
            h, hs = f64(np.zeros((3, 5)), requires_grad=False), []
            for x in xs:
                h = (x + h @ w).tanh()
                hs.append(h)
            tg.stack(hs).sum().backward()
        # the same gradient by hand: per-step products summed one by one
        states, dh, expect = [np.zeros((3, 5))], np.zeros((3, 5)), np.zeros((5, 5))
        for x in xs:
            states.append(np.tanh(x + states[-1] @ w0))
        for t in reversed(range(len(xs))):
            da = (dh + 1) * (1 - states[t + 1] ** 2)
            expect += states[t].T @ da
            dh = da @ w0.T
        # largest error seen: 1/20 of the bound, 4.4e-15
        np.testing.assert_allclose(w.grad.data, expect, rtol=2e-14, atol=2e-14)


def test_anomaly_mode_sees_nan_in_a_deferred_weight_gradient():
    w = f64(np.ones((2, 2)))
    y = f64(np.ones((1, 2)), requires_grad=False) @ w
    with tg.detect_anomaly(), pytest.raises(tg.AnomalyError, match="MatMulBackward"):
        y.backward(np.array([[np.nan, 1.0]]))


def test_is_anomaly_enabled_says_whether_detect_anomaly_is_on():
    assert not tg.is_anomaly_enabled()
    with tg.detect_anomaly():
        assert tg.is_anomaly_enabled()
    assert not tg.is_anomaly_enabled()


# ----------------------------------------------------------------------------- in-place safety
def _rnn_loss(cell, steps=3):
    h = None
    for t in range(steps):
        h = cell(Tensor(np.full((2, 3), 0.1 * t, np.float32)), h)
    return h.sum()


def test_optimizer_step_before_backward_is_refused_naming_the_op_and_weight(mode):
    cell = tg.nn.RNNCell(3, 4)
    opt = tg.optim.SGD(cell.parameters(), lr=0.1)
    loss = _rnn_loss(cell)
    for p in cell.parameters():
        p.grad = Tensor(np.ones_like(p.data))
    opt.step()  # overwrites the weights the graph saved
    # the first node the walk meets that saved a weight: the fused step, or op by op the bias add
    first = (r"RNNCellStepBackward.*'weight_ih' of shape \(4, 3\)" if mode == "fast" else
             r"AddBackward.*'bias_ih' of shape \(4,\)")
    with pytest.raises(RuntimeError, match=first + r" float32.*modified in place.*version 1 at forward, 2 now"):
        loss.backward()


def test_a_backward_refused_half_way_leaves_every_grad_untouched():
    # the walk reaches w's branch (made last, so visited first) before the stale x: leaves get
    # their gradients only once the whole walk is done, so w.grad stays None
    w, w2, x = f64([1.0, 2.0]), f64([3.0, 4.0]), f64([5.0, 6.0])
    loss = (w2 * x).sum() + (w * 3.0).sum()
    x.data = np.array([0.0, 0.0])  # an in-place write after the forward pass
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()
    assert w.grad is None and w2.grad is None and x.grad is None


@pytest.mark.parametrize("write", ["assign", "augmented", "zero_", "init", "load_state_dict"])
def test_every_framework_write_to_saved_data_is_caught_at_backward(write):
    lin = tg.nn.Linear(3, 2)
    x = f64(np.ones((1, 3))).float()
    loss = (lin(x) * lin(x)).sum()
    w = lin.weight
    if write == "assign":
        w.data = np.zeros_like(w.data)
    elif write == "augmented":
        w.data -= 1  # numpy's in-place subtract, then the setter
    elif write == "zero_":
        w.zero_()
    elif write == "init":
        tg.nn.init.zeros_(w)
    else:
        lin.load_state_dict({k: np.zeros_like(v) for k, v in lin.state_dict().items()})
    with pytest.raises(RuntimeError, match="modified in place after the forward pass"):
        loss.backward()


def test_backward_then_step_is_fine_and_a_retained_graph_notices_the_step():
    cell = tg.nn.RNNCell(3, 4)
    opt = tg.optim.SGD(cell.parameters(), lr=0.1)
    loss = _rnn_loss(cell)
    loss.backward(retain_graph=True)
    opt.step()
    loss2 = _rnn_loss(cell)  # a fresh graph sees the new weights: fine
    loss2.backward()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()  # the retained graph holds the old weights


def test_anomaly_mode_adds_where_the_stale_op_was_created():
    w = f64(np.ones((2, 2)))
    with tg.detect_anomaly():
        y = (f64(np.ones((1, 2)), requires_grad=False) @ w).sum()
        w.data = w.data * 2
        with pytest.raises(RuntimeError, match=r"MatMulBackward.*created.*test_engine.py"):
            y.backward()
