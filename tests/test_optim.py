"""Optimizers against their formulas written in numpy, min-char-rnn reproduced exactly, exact
resume from state_dict, LR schedules, and the numba update kernels against their references."""
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn, optim
from tinygrad_rnn.kernels import optim as kernels
from tinygrad_rnn.nn.utils import clip_grad_value_
from tinygrad_rnn.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, StepLR
from tolerances import EXACT64

# A tolerance's comment gives the largest error seen over 3 runs with fresh random data, as a
# fraction of what it allows and as |error| (measure: python tests/measure_tolerances.py tests/test_optim.py)

SHAPES = [(3, 4), (5,), (2, 3, 2)]


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def grad_stream(n, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(n)]


def run(opt, params, grads):
    for step in grads:
        for p, g in zip(params, step):
            p.grad = Tensor(g.astype(p.dtype))
        opt.step()
    return [p.data.copy() for p in params]


# ----------------------------------------------------------------------------- formulas in numpy
def np_sgd(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p, buf = p.copy(), None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def np_adagrad(p, grads, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10, init=0.0):
    p, s = p.copy(), np.full_like(p, init)
    for t, g in enumerate(grads, 1):
        g = g + weight_decay * p
        s = s + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
    return p


def np_rmsprop(p, grads, lr, alpha, eps, weight_decay=0.0, momentum=0.0, centered=False):
    p, v, buf, mean = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        var = v
        if centered:
            mean = alpha * mean + (1 - alpha) * g
            var = v - mean ** 2
        step = g / (np.sqrt(var) + eps)
        if momentum:
            buf = momentum * buf + step
            step = buf
        p = p - lr * step
    return p


def np_adam(p, grads, lr, betas, eps, weight_decay=0.0):
    (b1, b2), p, m, v = betas, p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


CASES = [
    (optim.SGD, dict(lr=0.1), np_sgd),
    (optim.SGD, dict(lr=0.1, momentum=0.9), np_sgd),
    (optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01), np_sgd),
    (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1), np_sgd),
    (optim.Adagrad, dict(lr=0.1), np_adagrad),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.1, weight_decay=0.01, eps=1e-6), np_adagrad),
    (optim.RMSprop, dict(lr=0.01, alpha=0.99, eps=1e-8), np_rmsprop),
    (optim.RMSprop, dict(lr=2e-3, alpha=0.95, eps=1e-8), np_rmsprop),  # char-rnn's settings
    (optim.RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.1), np_rmsprop),
    (optim.Adam, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), np_adam),
    (optim.Adam, dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), np_adam),
]


@pytest.mark.parametrize("Opt,kw,formula", CASES)
def test_optimizer_matches_its_formula_over_several_steps(Opt, kw, formula):
    params = make_params()
    start = [p.data.copy() for p in params]
    grads = grad_stream(6)
    got = run(Opt(params, **kw), params, grads)
    np_kw = dict(kw)
    if Opt is optim.RMSprop:
        np_kw.setdefault("alpha", 0.99)
        np_kw.setdefault("eps", 1e-8)
    for i, (p0, p1) in enumerate(zip(start, got)):
        want = formula(p0, [step[i] for step in grads], **np_kw)
        # largest error seen: 1/53 of the bound, 5.9e-17
        np.testing.assert_allclose(p1, want, rtol=1e-13, atol=1e-15)


def test_float32_parameters_are_updated_in_float32():
    params = make_params(dtype=np.float32)
    start = [p.data.astype(np.float64) for p in params]
    grads = grad_stream(3)
    got = run(optim.Adam(params, lr=0.01), params, grads)
    for i, (p0, p1) in enumerate(zip(start, got)):
        assert p1.dtype == np.float32
        want = np_adam(p0, [s[i] for s in grads], 0.01, (0.9, 0.999), 1e-8)
        # largest error seen: 1/12 of the bound, 9.1e-8
        np.testing.assert_allclose(p1, want, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- min-char-rnn
def test_adagrad_reproduces_min_char_rnn_update_bit_for_bit():
    params = make_params()
    mems = [np.zeros_like(p.data) for p in params]
    mine = [p.data.copy() for p in params]
    opt = optim.Adagrad(params, lr=0.1, eps=1e-8, eps_inside_sqrt=True)
    for step in grad_stream(10):
        step = [g * 4 for g in step]
        for p, g in zip(params, step):
            p.grad = Tensor(g.copy())
        clip_grad_value_(params, 5)
        opt.step()
        # min-char-rnn.py, verbatim apart from the names
        for param, dparam, mem in zip(mine, step, mems):
            np.clip(dparam, -5, 5, out=dparam)
            mem += dparam * dparam
            param += -0.1 * dparam / np.sqrt(mem + 1e-8)
    for p, want in zip(params, mine):
        assert np.array_equal(p.data, want)


def test_min_char_rnn_training_loop_is_reproduced():
    """Karpathy's min-char-rnn (forward, hand-written BPTT, clip, Adagrad) against the same model
    written with tensors, autograd, clip_grad_value_ and optim.Adagrad."""
    text = "hello world, hello tinygrad. " * 4
    chars = sorted(set(text))
    V, H, T, lr = len(chars), 12, 8, 0.1
    ix = np.array([chars.index(c) for c in text])
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) * 0.01 for s in [(H, V), (H, H), (V, H)]] + [np.zeros((H, 1)), np.zeros((V, 1))]

    def numpy_loss_fun(inputs, targets, hprev, Wxh, Whh, Why, bh, by):
        xs, hs, ps = {}, {-1: hprev}, {}
        for t in range(len(inputs)):
            xs[t] = np.zeros((V, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)
            ys = Why @ hs[t] + by
            ps[t] = np.exp(ys) / np.sum(np.exp(ys))
        dWxh, dWhh, dWhy, dbh, dby = (np.zeros_like(a) for a in (Wxh, Whh, Why, bh, by))
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):
            dy = ps[t].copy()
            dy[targets[t]] -= 1
            dWhy += dy @ hs[t].T
            dby += dy
            dh = Why.T @ dy + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += dhraw @ xs[t].T
            dWhh += dhraw @ hs[t - 1].T
            dhnext = Whh.T @ dhraw
        return [dWxh, dWhh, dWhy, dbh, dby], hs[len(inputs) - 1]

    ref = [a.copy() for a in init]
    mems = [np.zeros_like(a) for a in ref]
    params = [nn.Parameter(a.copy()) for a in init]
    Wxh, Whh, Why, bh, by = params
    opt = optim.Adagrad(params, lr=lr, eps=1e-8, eps_inside_sqrt=True)
    eye = np.eye(V)
    hprev, h = np.zeros((H, 1)), Tensor(np.zeros((H, 1)))
    for p in range(0, 6 * T, T):
        inputs, targets = ix[p:p + T], ix[p + 1:p + T + 1]
        grads, hprev = numpy_loss_fun(inputs, targets, hprev, *ref)
        for param, dparam, mem in zip(ref, grads, mems):
            np.clip(dparam, -5, 5, out=dparam)
            mem += dparam * dparam
            param += -lr * dparam / np.sqrt(mem + 1e-8)

        loss = 0.0
        for t in range(T):
            h = (Wxh @ Tensor(eye[:, inputs[t]:inputs[t] + 1]) + Whh @ h + bh).tanh()
            logits = (Why @ h + by).reshape(1, V)
            loss = loss + tg.nn.functional.cross_entropy(logits, targets[t:t + 1], reduction="sum")
        opt.zero_grad()
        loss.backward()
        clip_grad_value_(params, 5)
        opt.step()
        h = h.detach()
    for p, want in zip(params, ref):
        # largest error seen: 1/13 of the bound, 9.2e-15
        np.testing.assert_allclose(p.data, want, rtol=2e-11, atol=2e-14)


def test_adagrad_defaults_are_pytorchs_eps_outside_the_sqrt():
    (p,) = [nn.Parameter(np.array([1.0, 1.0]))]
    p.grad = Tensor(np.array([1e-6, 1.0]))
    optim.Adagrad([p], lr=1.0).step()
    g = np.array([1e-6, 1.0])
    np.testing.assert_allclose(p.data, 1 - g / (g + 1e-10), rtol=EXACT64)  # exact in every run


# ----------------------------------------------------------------------------- state and resume
@pytest.mark.parametrize("Opt,kw,_", [CASES[i] for i in (1, 3, 5, 8, 10)])
def test_resume_from_state_dict_gives_identical_updates(Opt, kw, _):
    grads = grad_stream(8)
    params = make_params()
    opt = Opt(params, **kw)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    for step in grads[:4]:
        run(opt, params, [step])
        sched.step()
    checkpoint = pickle.loads(pickle.dumps({"model": [p.data.copy() for p in params], "opt": opt.state_dict(),
                                            "sched": sched.state_dict()}))
    for step in grads[4:]:
        run(opt, params, [step])
        sched.step()
    # a fresh run, built from scratch and loaded from the checkpoint
    resumed = [nn.Parameter(a) for a in checkpoint["model"]]
    opt2 = Opt(resumed, **kw)
    sched2 = StepLR(opt2, step_size=2, gamma=0.5)
    opt2.load_state_dict(checkpoint["opt"])
    sched2.load_state_dict(checkpoint["sched"])
    for step in grads[4:]:
        run(opt2, resumed, [step])
        sched2.step()
    for a, b in zip(params, resumed):
        assert np.array_equal(a.data, b.data)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_state_dict_uses_pytorch_layout_and_is_a_snapshot():
    params = make_params()
    opt = optim.Adam(params, lr=0.01)
    run(opt, params, grad_stream(1))
    sd = opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert sd["param_groups"] == [{"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                   "params": [0, 1, 2]}]
    assert sorted(sd["state"][0]) == ["exp_avg", "exp_avg_sq", "step"] and sd["state"][0]["step"] == 1
    saved = sd["state"][0]["exp_avg"].copy()
    run(opt, params, grad_stream(1, seed=5))
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)
    with pytest.raises(ValueError, match="don't match"):
        optim.Adam(params[:2]).load_state_dict(sd)


def test_param_groups_zero_grad_and_errors():
    a, b = make_params()[:2]
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[1]["momentum"] == 0.9
    a.grad, b.grad = Tensor(np.ones(a.shape)), Tensor(np.ones(b.shape))
    opt.zero_grad(set_to_none=False)
    assert not a.grad.data.any()
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    opt.step()  # nothing has a gradient: nothing moves, no state appears
    assert opt.state == {}
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([a * 2.0], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([a], lr=0.1, nesterov=True)


def test_optimizer_trains_a_model():
    tg.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3
    lin = nn.Linear(3, 1)
    opt = optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    for _ in range(100):
        loss = nn.MSELoss()(lin(Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-4


# ----------------------------------------------------------------------------- schedules
def _lrs(sched, epochs: int) -> list:
    """The lr of each of `epochs` epochs, stepping the optimizer and then the schedule."""
    lrs = []
    for _ in range(epochs):
        lrs.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return lrs


def test_step_and_exponential_lr():
    p = make_params()[:1]
    opt = optim.SGD(p, lr=1.0)
    assert _lrs(StepLR(opt, step_size=3, gamma=0.5), 10) == [0.5 ** (e // 3) for e in range(10)]
    opt = optim.Adam(p, lr=0.1)
    sched = ExponentialLR(opt, gamma=0.9)
    for epoch in range(1, 6):
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9 ** epoch, rel=1e-15)  # seen: 1/71
    assert opt.param_groups[0]["initial_lr"] == 0.1
    assert optim.lr_scheduler.StepLR is optim.StepLR is StepLR


def test_cosine_annealing_lr_follows_half_a_cosine_and_resumes_from_its_epoch():
    p = make_params()[:1]
    opt = optim.SGD(p, lr=0.1)
    lrs = _lrs(CosineAnnealingLR(opt, T_max=8, eta_min=0.01), 11)
    want = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 8)) / 2 for e in range(11)]
    assert lrs == pytest.approx(want, rel=1e-15, abs=0)
    assert lrs[0] == 0.1 and lrs[4] == pytest.approx(0.055, rel=1e-15) and lrs[8] == 0.01 < lrs[9] < lrs[10]
    # built at epoch 5 (a resumed run: initial_lr set, last_epoch = 4), the same lr as stepping there
    opt2 = optim.SGD(p, lr=0.037)
    opt2.param_groups[0]["initial_lr"] = 0.1
    assert CosineAnnealingLR(opt2, T_max=8, eta_min=0.01, last_epoch=4).get_last_lr() == [lrs[5]]
    assert optim.lr_scheduler.CosineAnnealingLR is CosineAnnealingLR
    with pytest.raises(ValueError, match="T_max must be at least 1, got 0"):
        CosineAnnealingLR(opt, T_max=0)


# ----------------------------------------------------------------------------- kernels
def _kernel_args(name, size, dtype, rng, flags):
    p, g = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
    state = lambda: np.abs(rng.standard_normal(size)).astype(dtype)  # noqa: E731
    lr, wd = 0.01 + rng.random() * 0.1, rng.random() * 0.1 * flags[0]
    if name == "sgd_step":
        return [p, g, state()], [lr, 0.9 * flags[1], 0.1 * flags[2], wd, flags[1] and not flags[2], flags[3]]
    if name == "adagrad_step":
        return [p, g, state()], [lr, wd, 1e-8, flags[1]]
    if name == "rmsprop_step":
        return [p, g, state() + 0.1, state(), state() * 0.1], [lr, 0.95, 1e-8, wd, 0.5 * flags[1], flags[2]]
    return [p, g, state(), state()], [lr, 0.9, 0.999, 1e-8, wd, 1 + int(rng.integers(0, 100))]


@pytest.mark.parametrize("name", ["sgd_step", "adagrad_step", "rmsprop_step", "adam_step"])
@settings(max_examples=25, deadline=None)
@given(size=st.integers(0, 70), f64_=st.booleans(), seed=st.integers(0, 10_000),
       flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_numba_update_kernels_equal_their_numpy_references(name, size, f64_, seed, flags):
    dtype = np.float64 if f64_ else np.float32
    arrays, scalars = _kernel_args(name, size, dtype, np.random.default_rng(seed), flags)
    fast = [a.copy() for a in arrays]
    ref = [a.copy() for a in arrays]
    getattr(kernels, name)(*fast, *scalars)
    getattr(kernels, name + "_ref")(*ref, *scalars)
    for a, b in zip(fast, ref):
        assert a.dtype == dtype
        if f64_:  # the same IEEE operations in the same order: bit for bit
            np.testing.assert_array_equal(a, b)
        else:
            # largest error seen over 3 runs of 25 draws: 1/22 of the bound, 4.8e-7
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_sgd_takes_the_general_kernels_numbers_bit_for_bit(dtype):
    # momentum 0 and no weight decay go to a kernel of three arguments (cheaper to enter)
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((2, 65, 64)).astype(dtype)
    fast, general = p.copy(), p.copy()
    kernels.sgd_step(fast, g, np.empty(0, dtype), 0.1, 0.0, 0.3, 0.0, False, False)
    kernels._sgd_step(general.reshape(-1), g.reshape(-1), np.empty(0, dtype), 0.1, 0.0, 0.3, 0.0, False, False)
    np.testing.assert_array_equal(fast, general)
    assert not np.array_equal(fast, p)


def test_kernels_update_in_place_and_refuse_strided_parameters():
    p, g, buf = np.ones((3, 4)), np.ones((4, 3)).T, np.zeros((3, 4))  # a transposed grad is fine
    kernels.sgd_step(p, g, buf, 0.5, 0.9, 0.0, 0.0, False, True)
    np.testing.assert_array_equal(p, 0.5)
    np.testing.assert_array_equal(buf, 1.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.sgd_step(np.ones((4, 3)).T, g, buf, 0.5, 0.9, 0.0, 0.0, False, False)
