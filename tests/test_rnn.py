"""Recurrent layers: BPTT checked three ways (finite differences, a hand-written numpy BPTT, the
same numbers twice), outputs against per-step numpy formulas, truncated BPTT, and two small
learning tasks."""
import gc
import tracemalloc
import weakref

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn, optim
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.utils import functional_call
from modes import path
from tolerances import EXACT, EXACT64, GRADCHECK

# Each tolerance below states the largest error seen over 3 runs with fresh random data (for
# a property, each run is 40 draws) as a fraction of what it allows, with the largest |error|
# (measure: python tests/measure_tolerances.py tests/test_rnn.py)


def f64(x, requires_grad=True):
    return Tensor(np.asarray(x, dtype=np.float64), requires_grad=requires_grad)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


ACT = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "sigmoid": sigmoid}
# derivative of the activation written in terms of its output h, as min-char-rnn does
DACT = {"tanh": lambda h: 1 - h * h, "relu": lambda h: (h > 0).astype(h.dtype), "sigmoid": lambda h: h * (1 - h)}


# ----------------------------------------------------------------------------- numpy references
def np_rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, act="tanh"):
    return ACT[act](x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def np_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def np_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    i_r, i_z, i_n = np.split(x @ w_ih.T + b_ih, 3, axis=-1)
    h_r, h_z, h_n = np.split(h @ w_hh.T + b_hh, 3, axis=-1)
    r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def np_sequence(module, x, hx=None):
    """PyTorch's documented stacking of cells, written out in numpy: x (T, B, I) time-major."""
    sd, H, L = module.state_dict(), module.hidden_size, module.num_layers
    D = 2 if module.bidirectional else 1
    lstm = isinstance(module, nn.LSTM)
    T, B = x.shape[:2]
    if hx is None:
        hx = (np.zeros((L * D, B, H)),) * (2 if lstm else 1)
    elif not lstm:
        hx = (hx,)
    finals, inp = [], list(x)
    for layer in range(L):
        outs = []
        for d, sfx in enumerate(["", "_reverse"][:D]):
            p = [sd[f"{n}_l{layer}{sfx}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            state = tuple(s[layer * D + d] for s in hx)
            ys = [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                if lstm:
                    state = np_lstm_cell(inp[t], *state, *p)
                elif isinstance(module, nn.GRU):
                    state = (np_gru_cell(inp[t], state[0], *p),)
                else:
                    state = (np_rnn_cell(inp[t], state[0], *p, module.nonlinearity),)
                ys[t] = state[0]
            finals.append(state)
            outs.append(ys)
        inp = [np.concatenate(step, -1) for step in zip(*outs)]
    h_n = tuple(np.stack([f[i] for f in finals]) for i in range(len(hx)))
    return np.stack(inp), (h_n if lstm else h_n[0])


def params_of(module):
    names = [n for n, _ in module.named_parameters()]
    return names, [p for _, p in module.named_parameters()]


# ----------------------------------------------------------------------------- BPTT through RNNCell
def manual_bptt(xs, ys, h0, w_ih, w_hh, b_ih, b_hh, w_hy, b_y, act):
    """min-char-rnn's forward and backward, batched: the equations written out by hand."""
    T, B = ys.shape
    hs, ps = {-1: h0}, {}
    for t in range(T):
        hs[t] = ACT[act](xs[t] @ w_ih.T + b_ih + hs[t - 1] @ w_hh.T + b_hh)
        logits = hs[t] @ w_hy.T + b_y
        e = np.exp(logits - logits.max(1, keepdims=True))
        ps[t] = e / e.sum(1, keepdims=True)
    grads = {k: np.zeros_like(v) for k, v in dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                                                    w_hy=w_hy, b_y=b_y).items()}
    dxs, dh_next = np.zeros_like(xs), np.zeros_like(h0)
    for t in reversed(range(T)):
        dy = ps[t].copy()
        dy[np.arange(B), ys[t]] -= 1  # softmax + cross-entropy: p - onehot
        grads["w_hy"] += dy.T @ hs[t]
        grads["b_y"] += dy.sum(0)
        dh = dy @ w_hy + dh_next
        dh_raw = DACT[act](hs[t]) * dh
        grads["b_ih"] += dh_raw.sum(0)
        grads["b_hh"] += dh_raw.sum(0)
        grads["w_ih"] += dh_raw.T @ xs[t]
        grads["w_hh"] += dh_raw.T @ hs[t - 1]
        dxs[t] = dh_raw @ w_ih
        dh_next = dh_raw @ w_hh
    return grads, dxs, dh_next


def unrolled_loss(cell, head, xs, h0, ys):
    h, loss = h0, 0.0
    for t in range(len(ys)):
        h = cell(xs[t], h)
        loss = loss + F.cross_entropy(head(h), ys[t], reduction="sum")
    return loss


@pytest.fixture(params=["fused", "unfused"])
def rnn_step_path(request):
    """Run a test on both Elman step paths: one fused graph node, or the generic ops."""
    with path(request.param == "fused"):
        yield request.param


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
@given(T=st.integers(1, 50), B=st.integers(1, 3), seed=st.integers(0, 2**16))
@example(T=50, B=3, seed=0)
def test_rnncell_bptt_equals_handwritten_numpy_bptt(rnn_step_path, act, T, B, seed):
    I, H, V = 4, 6, 5
    tg.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cell, head = nn.RNNCell(I, H, nonlinearity=act).double(), nn.Linear(H, V).double()
    xs = f64(rng.standard_normal((T, B, I)))
    h0 = f64(rng.standard_normal((B, H)) * 0.5)
    ys = rng.integers(0, V, (T, B))
    unrolled_loss(cell, head, xs, h0, ys).backward()

    grads, dxs, dh0 = manual_bptt(xs.data, ys, h0.data, cell.weight_ih.data, cell.weight_hh.data,
                                  cell.bias_ih.data, cell.bias_hh.data, head.weight.data, head.bias.data, act)
    got = dict(w_ih=cell.weight_ih, w_hh=cell.weight_hh, b_ih=cell.bias_ih, b_hh=cell.bias_hh,
               w_hy=head.weight, b_y=head.bias)
    # largest error seen: 1/17 of the bound, 1.1e-15
    for name, p in got.items():
        np.testing.assert_allclose(p.grad.data, grads[name], rtol=1e-12, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(xs.grad.data, dxs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h0.grad.data, dh0, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
def test_rnncell_bptt_passes_gradcheck_and_repeats_exactly(rnn_step_path, act):
    tg.manual_seed(1)
    rng = np.random.default_rng(1)
    cell = nn.RNNCell(2, 3, nonlinearity=act).double()
    names, params = params_of(cell)
    xs, h0 = f64(rng.standard_normal((4, 2, 2))), f64(rng.standard_normal((2, 3)))

    def run(xs, h0, *ps):
        h, hs = h0, []
        for t in range(xs.shape[0]):
            h = functional_call(cell, dict(zip(names, ps)), (xs[t], h))
            hs.append(h)
        return tg.stack(hs)

    assert tg.gradcheck(run, (xs, h0, *params), **GRADCHECK)
    # the same graph twice gives the same numbers, bit for bit
    first = run(xs, h0, *params)
    first.sum().backward()
    g1 = [p.grad.data.copy() for p in params]
    cell.zero_grad()
    second = run(xs, h0, *params)
    second.sum().backward()
    assert np.array_equal(first.data, second.data)
    assert all(np.array_equal(a, p.grad.data) for a, p in zip(g1, params))


def _run_both_paths(build, run, seed=3):
    """(outputs, grads) of `run(build())` on the fast path and on the plain one."""
    results = []
    for fused in (True, False):
        tg.manual_seed(seed)
        with path(fused):
            module, inputs = build()
            out = run(module, inputs)
            out.backward(np.cos(np.arange(out.data.size)).reshape(out.shape).astype(out.dtype))
        grads = [p.grad.data for p in module.parameters()] + [x.grad.data for x in inputs]
        results.append((out.data, grads))
    return results


def _assert_fused_equals_generic(build, run, dtype=np.float64, seed=3):
    """The fused step's forward is the op-by-op graph's bit for bit; its gradients are the same
    sums, with a weight's per-step products added in another order."""
    (out_f, grads_f), (out_u, grads_u) = _run_both_paths(build, run, seed)
    assert out_f.dtype == dtype and np.array_equal(out_f, out_u)
    # largest error seen: float64 1/22 of the bound, float32 1/18
    tol = 5e-14 if dtype == np.float64 else 1e-5
    for gf, gu in zip(grads_f, grads_u):
        np.testing.assert_allclose(gf, gu, rtol=tol, atol=tol)


FUSED_CELLS = {  # a cell of each fused step
    "RNNCell[tanh]": lambda I, H, bias: nn.RNNCell(I, H, bias, "tanh"),
    "RNNCell[relu]": lambda I, H, bias: nn.RNNCell(I, H, bias, "relu"),
    "RNNCell[sigmoid]": lambda I, H, bias: nn.RNNCell(I, H, bias, "sigmoid"),
    "LSTMCell": lambda I, H, bias: nn.LSTMCell(I, H, bias),
    "GRUCell": lambda I, H, bias: nn.GRUCell(I, H, bias),
}


@pytest.mark.parametrize("kind", list(FUSED_CELLS))
@given(dtype=st.sampled_from([np.float32, np.float64]), bias=st.booleans(), T=st.integers(1, 9),
       B=st.integers(1, 4), I=st.integers(1, 6), H=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_fused_steps_equal_the_generic_ops(kind, dtype, bias, T, B, I, H, seed):
    make = FUSED_CELLS[kind]
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((T, B, I))] + [rng.standard_normal((B, H)) for _ in range(1 + (kind == "LSTMCell"))]

    def build():
        return make(I, H, bias).to(dtype), [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]

    def run(cell, inputs):  # an LSTM's h * c: both of its outputs reach the loss
        xs, *state = inputs
        return _unroll_cell(cell, xs, tuple(state) if len(state) > 1 else state[0])

    _assert_fused_equals_generic(build, run, dtype, seed)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_fused_step_in_deep_bidirectional_rnn_equals_the_generic_ops(act):
    x0 = np.random.default_rng(1).standard_normal((6, 2, 3))

    def build():
        return nn.RNN(3, 4, num_layers=2, nonlinearity=act, bidirectional=True).double(), [f64(x0)]

    _assert_fused_equals_generic(build, lambda m, i: m(i[0])[0])


def test_fused_step_errors_name_the_op_and_shapes():
    cell = nn.RNNCell(4, 5)
    with pytest.raises(tg.ShapeError, match=r"rnn_cell.*float64"):
        cell(Tensor(np.zeros((2, 4))), None)  # float64 input, float32 weights
    from tinygrad_rnn.fast.steps import RNNCellStep
    with pytest.raises(tg.ShapeError, match=r"RNNCellStep.*h \(2, 6\)"):
        RNNCellStep.apply(Tensor(np.zeros((2, 4), np.float32)), Tensor(np.zeros((2, 6), np.float32)),
                          cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    # the biases' gradients are sums over the batch's rows: a bias of any other shape than
    # (H,) is refused here rather than handed a gradient of the wrong shape in backward
    x, h = Tensor(np.zeros((2, 4), np.float32)), Tensor(np.zeros((2, 5), np.float32))
    row = Tensor(np.zeros((1, 5), np.float32), requires_grad=True)
    with pytest.raises(tg.ShapeError, match=r"RNNCellStep.*b_ih \(1, 5\), b_hh \(5,\)"):
        RNNCellStep.apply(x, h, cell.weight_ih, cell.weight_hh, row, cell.bias_hh)
    with pytest.raises(tg.ShapeError, match=r"RNNCellStep.*b_ih \(5,\), b_hh None"):
        RNNCellStep.apply(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, None)


def test_fused_lstm_step_in_deep_bidirectional_lstm_equals_the_generic_ops():
    x0 = np.random.default_rng(3).standard_normal((2, 6, 3))

    def build():
        return nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).double(), [f64(x0)]

    def run(m, i):
        out, (h_n, c_n) = m(i[0])
        return out.sum() + (h_n * c_n).sum()

    _assert_fused_equals_generic(build, run)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_layer_on_token_ids_equals_the_generic_ops(bidirectional):
    """The layer's sequence path (fast/sequence.py) on token ids, a repeated id among them,
    against the op-by-op steps: forward bit for bit, gradients to rounding."""
    ids = np.array([[1, 4, 1], [0, 1, 1], [4, 2, 1], [1, 1, 3]])

    def build():
        return nn.LSTM(5, 4, num_layers=2, bidirectional=bidirectional).double(), []

    def run(m, _):
        out, (h_n, c_n) = m(ids)
        return out.sum() + (h_n * c_n).sum()

    _assert_fused_equals_generic(build, run)


@pytest.mark.parametrize("uses", ["h_n", "c_n", "out[0]", "out[-1] reversed"])
def test_lstm_layer_gradients_when_the_loss_reads_one_output(uses):
    """Whichever output the gradient enters through, every step's share reaches the
    projection, the weights and the initial state as on the op-by-op path (fast/sequence.py)."""
    x0 = np.random.default_rng(5).standard_normal((5, 2, 3))
    pick = {"h_n": lambda out, h, c: h, "c_n": lambda out, h, c: c, "out[0]": lambda out, h, c: out[0],
            "out[-1] reversed": lambda out, h, c: out[-1]}[uses]

    def build():
        return nn.LSTM(3, 4, bidirectional=uses.endswith("reversed")).double(), [f64(x0)]

    def run(m, i):
        out, (h_n, c_n) = m(i[0])
        return (pick(out, h_n, c_n) * 1.5).sum()

    _assert_fused_equals_generic(build, run)


def test_lstm_layer_graph_walked_twice_or_by_the_plain_accumulator_gives_the_same_gradients():
    """A retained graph walked twice doubles every gradient; a graph recorded on the fast path
    and walked by the textbook accumulator (its lazy shares evaluated one by one) gives the
    same gradients."""
    lstm = nn.LSTM(3, 4, num_layers=2).double()
    x = np.random.default_rng(6).integers(0, 3, (5, 2))

    def grads(walks=1, plain_walk=False):
        lstm.zero_grad()
        out, (h_n, c_n) = lstm(x)
        loss = (out * out).sum() + (h_n * c_n).sum()
        for k in range(walks):
            if plain_walk:
                with tg.fast.disabled():
                    loss.backward(retain_graph=k + 1 < walks)
            else:
                loss.backward(retain_graph=k + 1 < walks)
        return [p.grad.data.copy() for p in lstm.parameters()]

    once = grads()
    for a, b in zip(grads(walks=2), once):
        np.testing.assert_allclose(a, 2 * b, rtol=1e-14, atol=1e-15)
    for a, b in zip(grads(plain_walk=True), once):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("ids", [False, True])
def test_lstm_layer_passes_gradcheck(ids):
    """Every weight and bias, the initial state and a dense input of a 2-layer LSTM layer on
    the fast path (fast/sequence.py) against finite differences."""
    rng = np.random.default_rng(12)
    lstm = nn.LSTM(3, 2, num_layers=2).double()
    names, params = params_of(lstm)
    x = np.array([[2, 0], [2, 2], [1, 0]]) if ids else f64(rng.standard_normal((3, 2, 3)))
    h0, c0 = (f64(rng.standard_normal((2, 2, 2))) for _ in range(2))

    def run(x, h0, c0, *ps):
        out, (h_n, c_n) = functional_call(lstm, dict(zip(names, ps)), (x, (h0, c0)))
        return (out * out).sum() + (h_n * c_n).sum()

    assert tg.gradcheck(run, (x, h0, c0, *params), **GRADCHECK)


def test_fused_lstm_step_passes_gradcheck_and_names_bad_shapes():
    from tinygrad_rnn.fast.steps import LSTMCellStep
    rng = np.random.default_rng(4)
    args = [f64(rng.standard_normal(s)) for s in ((2, 3), (2, 4), (2, 4), (16, 3), (16, 4), (16,), (16,))]
    assert tg.gradcheck(lambda *a: LSTMCellStep.apply(*a), args, **GRADCHECK)
    with pytest.raises(tg.ShapeError, match=r"LSTMCellStep.*w_hh \(16, 5\)"):
        LSTMCellStep.apply(*args[:4], f64(np.zeros((16, 5))), *args[5:])
    with pytest.raises(tg.ShapeError, match=r"lstm_cell.*float32"):
        LSTMCellStep.apply(Tensor(np.zeros((2, 3), np.float32)), *args[1:])


def test_fused_gru_step_in_deep_bidirectional_gru_equals_the_generic_ops():
    x0 = np.random.default_rng(6).standard_normal((6, 2, 3))

    def build():
        return nn.GRU(3, 4, num_layers=2, bidirectional=True).double(), [f64(x0)]

    _assert_fused_equals_generic(build, lambda m, i: m(i[0])[0])


def test_fused_gru_step_passes_gradcheck_and_names_bad_shapes():
    from tinygrad_rnn.fast.steps import GRUCellStep
    rng = np.random.default_rng(7)
    args = [f64(rng.standard_normal(s)) for s in ((2, 3), (2, 4), (12, 3), (12, 4), (12,), (12,))]
    assert tg.gradcheck(lambda *a: GRUCellStep.apply(*a), args, **GRADCHECK)
    with pytest.raises(tg.ShapeError, match=r"GRUCellStep.*w_ih \(12, 5\)"):
        GRUCellStep.apply(args[0], args[1], f64(np.zeros((12, 5))), *args[3:])


# ----------------------------------------------------------------------------- token-id input
CELLS = [nn.RNNCell, nn.LSTMCell, nn.GRUCell]


def _unroll_cell(cell, xs, state):
    outs = []
    for t in range(len(xs)):
        state = cell(xs[t], state)
        outs.append(state[0] * state[1] if isinstance(state, tuple) else state)
    return tg.stack(outs)


def _ids_and_one_hot(cell, ids, state0, dtype):
    """(outputs, gradients of every parameter and of the initial state) fed token ids, then
    fed the same tokens as one-hot rows."""
    results = []
    for xs in (ids, np.eye(cell.input_size, dtype=dtype)[ids]):
        cell.zero_grad()
        state = tuple(Tensor(s, requires_grad=True) for s in state0)
        out = _unroll_cell(cell, xs, state if len(state) > 1 else state[0])
        (out * out).sum().backward()
        results.append((out.data, [p.grad.data for p in cell.parameters()] + [s.grad.data for s in state]))
    return results


@pytest.mark.parametrize("Cell", CELLS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(T=st.integers(1, 6), B=st.integers(1, 4), I=st.integers(1, 7), H=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_token_ids_give_the_one_hot_inputs_numbers(Cell, fused, dtype, T, B, I, H, seed):
    # one_hot(ids) @ W.T is a gather: forward bit for bit, gradients the same sums in another
    # order (repeated tokens in a batch included: B > I happens)
    with path(fused):
        rng = np.random.default_rng(seed)
        cell = Cell(I, H).to(dtype)
        ids = rng.integers(0, I, (T, B))
        state0 = [rng.standard_normal((B, H)).astype(dtype) for _ in range(2 if Cell is nn.LSTMCell else 1)]
        (out_i, grads_i), (out_o, grads_o) = _ids_and_one_hot(cell, ids, state0, dtype)
        assert out_i.dtype == dtype and np.array_equal(out_i, out_o)
        # largest error seen: float64 1/31 of the bound (3.6e-15), float32 1/62 (1.9e-6)
        tol = 1e-14 if dtype == np.float64 else 1e-5
        for gi, go in zip(grads_i, grads_o):
            assert gi.flags.c_contiguous
            np.testing.assert_allclose(gi, go, rtol=tol, atol=tol)


@pytest.mark.parametrize("Layer", [nn.RNN, nn.LSTM, nn.GRU])
def test_sequence_layers_take_token_ids(Layer, mode):
    rng = np.random.default_rng(8)
    m = Layer(5, 3, num_layers=2, bidirectional=True, batch_first=True).double()
    ids = rng.integers(0, 5, (2, 4))  # (B, T): batch_first
    for x_ids, x_hot in ((ids, np.eye(5)[ids]), (ids[0], np.eye(5)[ids[0]])):  # batched, unbatched
        results = []
        for x in (x_ids, x_hot):
            m.zero_grad()
            out, h_n = m(x)
            h_n = h_n[0] if isinstance(h_n, tuple) else h_n
            ((out * out).sum() + h_n.sum()).backward()
            results.append((out.data, [p.grad.data for p in m.parameters()]))
        (out_i, grads_i), (out_o, grads_o) = results
        assert np.array_equal(out_i, out_o)
        for gi, go in zip(grads_i, grads_o):
            np.testing.assert_allclose(gi, go, rtol=5e-15, atol=5e-15)  # largest error seen: 1/68, 1.1e-16


@pytest.mark.parametrize("op", ["RNNCellStep", "LSTMCellStep", "GRUCellStep"])
def test_fused_steps_on_token_ids_pass_gradcheck(op):
    from tinygrad_rnn.fast import steps as ops
    gates = {"RNNCellStep": 1, "LSTMCellStep": 4, "GRUCellStep": 3}[op]
    rng = np.random.default_rng(9)
    ids = np.array([2, 0, 2])  # a repeated token: its column gets both rows' gradients
    states = [(3, 4)] * (2 if op == "LSTMCellStep" else 1)
    args = [f64(rng.standard_normal(s)) for s in states + [(4 * gates, 3), (4 * gates, 4), (4 * gates,), (4 * gates,)]]
    assert tg.gradcheck(lambda *a: getattr(ops, op).apply(ids, *a), args, **GRADCHECK)


def test_a_weight_fed_token_ids_and_used_densely_gets_both_gradients():
    # ColumnGrad's Fortran-ordered buffer and a dense gradient meet in one sum; the weight
    # also passes through an op first, so the buffer reaches a backward, not just a leaf
    from tinygrad_rnn.fast.steps import RNNCellStep
    rng = np.random.default_rng(10)
    w0, h0 = rng.standard_normal((4, 3)), rng.standard_normal((3, 4))
    ids = np.array([1, 1, 2])
    grads = []
    for x in (ids, np.eye(3)[ids]):
        w = f64(w0)
        w_ih = w * 2.0
        h = RNNCellStep.apply(x, f64(h0, requires_grad=False), w_ih, f64(np.eye(4)), None, None)
        ((h * h).sum() + (w_ih * w_ih).sum()).backward()
        grads.append(w.grad.data)
    assert grads[0].flags.c_contiguous
    np.testing.assert_allclose(grads[0], grads[1], rtol=EXACT64)  # exact in every run


@pytest.mark.parametrize("Cell", CELLS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_token_ids_overwritten_after_forward_change_nothing(Cell, fused):
    # a data loader refilling its batch buffer before backward: the step kept its own copy
    # (the backward's scatter would otherwise index out of bounds)
    with path(fused):
        cell = Cell(4, 3).double()
        grads = []
        for overwrite in (False, True):
            cell.zero_grad()
            ids = np.array([3, 0, 3])
            out = cell(ids)
            if overwrite:
                ids[:] = 10**9
            (out[0] if isinstance(out, tuple) else out).sum().backward()
            grads.append([p.grad.data.copy() for p in cell.parameters()])
        for a, b in zip(*grads):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_token_id_errors_name_the_op_and_the_id(fused):
    with path(fused):
        cell = nn.RNNCell(4, 5)
        with pytest.raises(tg.ShapeError, match=r"(RNNCellStep: token id|Embedding: index) 4 is out of range for 4"):
            cell(np.array([0, 4]))
        with pytest.raises(tg.ShapeError, match=r"-1 is out of range for 4"):
            cell(np.array([-1, 0]))
        with pytest.raises(ValueError, match=r"RNNCell: integer input is read as token ids.*\(2, 4\) int64"):
            cell(np.zeros((2, 4), np.int64))
        with pytest.raises(ValueError, match=r"RNN: expected input.*token ids with 2 or 1; got \(2, 3, 4\) int64"):
            nn.RNN(4, 5)(np.zeros((2, 3, 4), np.int64))
        # a loop's step (token ids and a state Tensor) takes RNNCell's short path when the state's
        # shape fits; when it does not, the long path names it
        with pytest.raises(ValueError, match=r"RNNCell: expected hidden state of shape \(2, 5\), got \(3, 5\)"):
            cell(np.array([0, 1]), tg.zeros(3, 5))
        with pytest.raises(ValueError, match=r"expected hidden state of shape \(2, 5\), got \(2, 4\)"):
            cell(np.array([0, 1]), tg.zeros(2, 4))


def test_the_token_id_short_path_gives_what_the_checked_path_gives():
    cell = nn.RNNCell(4, 5).double()
    ids, h = np.array([3, 0, 2]), tg.Tensor(np.random.default_rng(1).standard_normal((3, 5)))
    short = cell(ids, h)  # ndarray ids, Tensor state: the short path
    checked = cell(ids, h.data)  # a numpy state goes through _batch
    np.testing.assert_array_equal(short.data, checked.data)
    unbatched = cell(np.array(2), h[1])
    np.testing.assert_array_equal(unbatched.data, cell(np.array([2]), h[1:2]).data[0])


@pytest.mark.parametrize("case", ["all", "frozen weights", "state without grad", "nothing", "no_grad",
                                  "bad weight", "anomaly"])
def test_the_short_path_records_the_node_apply_records(case):
    """RNNCellStep.apply_to_tensors (what a cell calls with token ids and a Tensor state) makes
    the node, output, flags and errors that the generic apply makes from the same inputs."""
    from tinygrad_rnn.fast.steps import RNNCellStep
    rng = np.random.default_rng(5)
    cell = nn.RNNCell(4, 5).double()
    ids = np.array([3, 0, 2])
    h = Tensor(rng.standard_normal((3, 5)), requires_grad=case != "state without grad")
    for p in cell.parameters():
        p.requires_grad = case not in ("frozen weights", "nothing")
    if case == "nothing":
        h.requires_grad = False
    if case == "bad weight":
        cell.weight_hh = nn.Parameter(np.zeros((5, 4)))
    if case == "anomaly":
        cell.weight_hh.data = np.full((5, 5), np.nan)
    for k, t in enumerate([h] + list(cell.parameters())):
        for _ in range(k + 1):
            t.data = t.data  # each input at a version of its own, so a mix-up would show
    args = (ids, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, "tanh")
    outs, errors = [], []
    for run in (RNNCellStep.apply, RNNCellStep.apply_to_tensors):
        try:
            if case == "no_grad":
                with tg.no_grad():
                    outs.append(run(*args))
            elif case == "anomaly":
                with tg.detect_anomaly():
                    outs.append(run(*args))
            else:
                outs.append(run(*args))
        except Exception as e:  # noqa: BLE001 - both paths must raise the same
            errors.append((type(e), str(e)))
    if case in ("bad weight", "anomaly"):
        assert len(errors) == 2 and errors[0] == errors[1]
        assert "RNNCellStep" in errors[0][1]
        return
    generic, short = outs
    np.testing.assert_array_equal(short.data, generic.data)
    assert short.requires_grad is generic.requires_grad
    assert (short._ctx is None) is (generic._ctx is None)
    if generic._ctx is not None:
        a, b = generic._ctx, short._ctx
        assert type(b) is RNNCellStep and b.needs_input_grad == a.needs_input_grad
        assert b.versions == a.versions and b.writes == a.writes
        assert all(p is q for p, q in zip(a.parents, b.parents)) and len(a.parents) == len(b.parents)
        assert b.seq > a.seq and b.created_at is None
    else:
        assert case in ("nothing", "no_grad")


def test_sigmoid_rnn_is_the_lecture_notes_formula():
    cell = nn.RNNCell(3, 4, nonlinearity="sigmoid").double()
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    A, B = cell.weight_hh.data, cell.weight_ih.data
    c = cell.bias_ih.data + cell.bias_hh.data
    np.testing.assert_allclose(cell(f64(x), f64(h)).data, sigmoid(h @ A.T + x @ B.T + c), rtol=1e-14)  # seen: 1/43


def test_concatenation_identity_values_and_gradients(mode):
    """X W_xh + H W_hh == cat(X, H) @ cat(W_xh, W_hh): one matmul on stacked inputs is the same step."""
    rng = np.random.default_rng(0)
    X, Hs = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    W_xh, W_hh = rng.standard_normal((4, 6)), rng.standard_normal((5, 6))
    g = rng.standard_normal((3, 6))
    a = [f64(v) for v in (X, Hs, W_xh, W_hh)]
    b = [f64(v) for v in (X, Hs, W_xh, W_hh)]
    split = a[0] @ a[2] + a[1] @ a[3]
    joined = tg.cat([b[0], b[1]], 1) @ tg.cat([b[2], b[3]], 0)
    np.testing.assert_allclose(split.data, joined.data, rtol=5e-14)  # seen: 1/29, 8.9e-16
    split.backward(g)
    joined.backward(g)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u.grad.data, v.grad.data, rtol=EXACT64)  # exact in every run


# ----------------------------------------------------------------------------- cells
def test_lstm_and_gru_cells_match_numpy_and_gradcheck(mode):
    rng = np.random.default_rng(2)
    for Cell, ref in ((nn.LSTMCell, np_lstm_cell), (nn.GRUCell, np_gru_cell)):
        tg.manual_seed(2)
        cell = Cell(3, 2).double()
        names, params = params_of(cell)
        x, h, c = (f64(rng.standard_normal(s)) for s in ((2, 3), (2, 2), (2, 2)))
        hx = (h, c) if Cell is nn.LSTMCell else h
        out = cell(x, hx)
        want = ref(x.data, *(s.data for s in (hx if Cell is nn.LSTMCell else (h,))), *(p.data for p in params))
        for o, w in zip(out if isinstance(out, tuple) else (out,), want if isinstance(want, tuple) else (want,)):
            np.testing.assert_allclose(o.data, w, rtol=1e-14)  # seen: 1/22, 1.7e-16

        def fn(x, h, c, *ps):
            return functional_call(cell, dict(zip(names, ps)), (x, (h, c) if Cell is nn.LSTMCell else h))

        assert tg.gradcheck(fn, (x, h, c, *params), **GRADCHECK)


def test_cells_default_state_unbatched_input_and_bias_false(mode):
    tg.manual_seed(0)
    for cell in (nn.RNNCell(3, 4, bias=False), nn.LSTMCell(3, 4), nn.GRUCell(3, 4)):
        x = tg.randn(3)
        one, batched = cell(x), cell(x.reshape(1, 3))
        if not isinstance(one, tuple):
            one, batched = (one,), (batched,)
        for a, b in zip(one, batched):
            assert a.shape == (4,)
            np.testing.assert_allclose(a.data, b.data[0], rtol=EXACT[a.dtype])  # exact in every run
    assert [n for n, _ in nn.RNNCell(3, 4, bias=False).named_parameters()] == ["weight_ih", "weight_hh"]
    with pytest.raises(ValueError, match="hidden state of shape"):
        nn.GRUCell(3, 4)(tg.randn(2, 3), tg.randn(3, 4))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        nn.RNNCell(3, 4, nonlinearity="gelu")


def test_init_is_uniform_within_one_over_sqrt_hidden():
    tg.manual_seed(0)
    lstm = nn.LSTM(10, 25, num_layers=2)
    for _, p in lstm.named_parameters():
        assert np.abs(p.data).max() <= 0.2 and np.abs(p.data).max() > 0.19
        assert p.dtype == np.float32


# ----------------------------------------------------------------------------- sequence layers
CONFIGS = [(nn.RNN, dict(nonlinearity="tanh")), (nn.RNN, dict(nonlinearity="relu")),
           (nn.LSTM, {}), (nn.GRU, {})]


@pytest.mark.parametrize("Layer,kw", CONFIGS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_sequence_layers_match_numpy_stacking(Layer, kw, num_layers, bidirectional, mode):
    tg.manual_seed(3)
    rng = np.random.default_rng(3)
    m = Layer(3, 4, num_layers=num_layers, bidirectional=bidirectional, **kw).double()
    x = rng.standard_normal((5, 2, 3))
    LD = num_layers * (2 if bidirectional else 1)
    hx = rng.standard_normal((LD, 2, 4))
    hx = (hx, rng.standard_normal((LD, 2, 4))) if Layer is nn.LSTM else hx
    out, h_n = m(f64(x, False), tuple(f64(h, False) for h in hx) if Layer is nn.LSTM else f64(hx, False))
    want_out, want_h = np_sequence(m, x, hx)
    # largest errors seen: 1/16 and 1/25 of the bound, 1.1e-16
    np.testing.assert_allclose(out.data, want_out, rtol=1e-13, atol=1e-15)
    for got, want in zip(h_n if Layer is nn.LSTM else (h_n,), want_h if Layer is nn.LSTM else (want_h,)):
        np.testing.assert_allclose(got.data, want, rtol=1e-13, atol=1e-15)
    # zero default state, batch_first and unbatched input are the same numbers rearranged
    bf = Layer(3, 4, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, **kw).double()
    bf.load_state_dict(m.state_dict())
    ref_out, ref_h = m(f64(x, False))
    bf_out, bf_h = bf(f64(x.transpose(1, 0, 2), False))
    # batch_first and unbatched: exact in every run but the last line's (1/2.5 of its bound)
    np.testing.assert_allclose(bf_out.data.transpose(1, 0, 2), ref_out.data, rtol=EXACT64)
    first = ref_h[0] if Layer is nn.LSTM else ref_h
    np.testing.assert_allclose((bf_h[0] if Layer is nn.LSTM else bf_h).data, first.data, rtol=EXACT64)
    un_out, un_h = m(f64(x[:, 1], False))
    np.testing.assert_allclose(un_out.data, ref_out.data[:, 1], rtol=1e-13)
    assert (un_h[0] if Layer is nn.LSTM else un_h).shape == (LD, 4)


@pytest.mark.parametrize("Layer", [nn.RNN, nn.LSTM, nn.GRU])
def test_multilayer_bidirectional_gradcheck(Layer, mode):
    tg.manual_seed(4)
    rng = np.random.default_rng(4)
    m = Layer(2, 2, num_layers=2, bidirectional=True).double()
    names, params = params_of(m)
    x = f64(rng.standard_normal((3, 2, 2)))
    h0 = f64(rng.standard_normal((4, 2, 2)))

    def fn(x, h0, *ps):
        hx = (h0, h0 * 0.5) if Layer is nn.LSTM else h0
        out, h_n = functional_call(m, dict(zip(names, ps)), (x, hx))
        return (out,) + (h_n if isinstance(h_n, tuple) else (h_n,))

    # random projections of the outputs (v^T J), every input element by finite differences
    assert tg.gradcheck(fn, (x, h0, *params), full_limit=0, n_directions=1, **GRADCHECK)


@pytest.mark.parametrize("Layer", [nn.RNN, nn.LSTM, nn.GRU])
def test_bias_false_is_zero_biases(Layer, mode):
    tg.manual_seed(9)
    with_bias, without = Layer(3, 4, num_layers=2), Layer(3, 4, num_layers=2, bias=False)
    sd = without.state_dict()
    with_bias.load_state_dict({k: sd.get(k, np.zeros_like(v)) for k, v in with_bias.state_dict().items()})
    x = tg.randn(5, 2, 3)
    np.testing.assert_allclose(with_bias(x)[0].data, without(x)[0].data, rtol=EXACT[np.dtype(np.float32)],
                               atol=EXACT[np.dtype(np.float32)])  # exact in every run


def test_dropout_between_layers_only_while_training():
    tg.manual_seed(5)
    m = nn.GRU(3, 8, num_layers=2, dropout=0.5)
    x = tg.randn(4, 2, 3)
    m.eval()
    a, b = m(x)[0].data, m(x)[0].data
    np.testing.assert_array_equal(a, b)
    m.train()
    tg.manual_seed(0)
    c = m(x)[0].data
    tg.manual_seed(0)
    np.testing.assert_array_equal(c, m(x)[0].data)  # seeded masks are reproducible
    assert not np.allclose(c, a)
    assert repr(m) == "GRU(3, 8, num_layers=2, dropout=0.5)"


def test_sequence_layer_shape_errors_are_clear():
    m = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="expected input of 3 features"):
        m(tg.randn(5, 2, 7))
    with pytest.raises(ValueError, match=r"expected hidden size \(2, 2, 4\), got \(1, 2, 4\)"):
        m(tg.randn(5, 2, 3), (tg.zeros(1, 2, 4), tg.zeros(1, 2, 4)))


# ----------------------------------------------------------------------------- truncated BPTT
def test_detach_cuts_the_graph_between_chunks(mode):
    tg.manual_seed(6)
    rnn = nn.RNN(3, 4).double()
    rng = np.random.default_rng(6)
    x1, x2 = f64(rng.standard_normal((5, 2, 3))), f64(rng.standard_normal((5, 2, 3)))
    _, h = rnn(x1)
    h = h.detach()
    assert h._ctx is None and not h.requires_grad
    out, _ = rnn(x2, h)
    out.sum().backward()
    assert x1.grad is None  # nothing flowed back into the first chunk
    grads = [p.grad.data.copy() for p in rnn.parameters()]
    # ... and the parameters' gradients are those of chunk 2 alone, started from a constant state
    rnn.zero_grad()
    rnn(x2, f64(h.data, False))[0].sum().backward()
    for g, p in zip(grads, rnn.parameters()):
        np.testing.assert_array_equal(g, p.grad.data)


def _chunk(rnn, head, x, y, h):
    out, h = rnn(x, h)
    return F.cross_entropy(head(out).reshape(-1, 5), y.reshape(-1)), h


@pytest.mark.parametrize("detach", [True, False])
def test_first_chunk_graph_is_released_only_after_detach(detach):
    tg.manual_seed(7)
    rnn, x = nn.LSTM(5, 8), tg.randn(6, 2, 5)
    out, h = rnn(x)
    node = weakref.ref(h[0]._ctx.parents[0])  # the last step's h, inside the first chunk's graph
    del out
    h = (h[0].detach(), h[1].detach()) if detach else h
    out2, _ = rnn(x, h)  # the second chunk, its graph alive
    gc.collect()
    assert (node() is None) == detach  # without detach the second chunk's graph holds the first


def test_memory_stays_flat_over_many_truncated_chunks():
    tg.manual_seed(8)
    rnn, head = nn.LSTM(5, 16), nn.Linear(16, 5)
    opt = optim.SGD(list(rnn.parameters()) + list(head.parameters()), lr=0.01)
    rng = np.random.default_rng(8)
    x, y = tg.randn(10, 4, 5), rng.integers(0, 5, (10, 4))
    h = None
    tracemalloc.start()
    try:
        for i in range(40):
            before = tracemalloc.get_traced_memory()[0]
            loss, h = _chunk(rnn, head, x, y, h)
            graph = tracemalloc.get_traced_memory()[0] - before  # one chunk's graph, ~200 kB
            loss.backward()
            opt.step()
            opt.zero_grad()
            h = (h[0].detach(), h[1].detach())
            if i == 9:
                gc.collect()
                early = tracemalloc.get_traced_memory()[0]
        gc.collect()
        late = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # 30 more chunks; keeping even a quarter of one chunk's graph each time would add 7 graphs
    assert late - early < graph / 4, (early, late, graph)


# ----------------------------------------------------------------------------- learning
def _train(model, head, batch, steps, lr=1e-2, V=4):
    params = list(model.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=lr)
    for _ in range(steps):
        x, y = batch()
        loss = F.cross_entropy(head(model(x)[0]).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
    x, y = batch()
    with tg.no_grad():
        pred = head(model(x)[0]).data.argmax(-1)
    keep = y != -100
    return (pred[keep] == y[keep]).mean()


def test_tanh_rnn_learns_to_echo_the_input_from_k_steps_earlier():
    V, T, B, k = 4, 20, 32, 3
    rng = np.random.default_rng(0)
    eye = np.eye(V, dtype=np.float32)

    def batch():
        x = rng.integers(0, V, (T, B))
        y = np.full((T, B), -100)  # the first k steps have nothing to echo
        y[k:] = x[:-k]
        return Tensor(eye[x]), y

    tg.manual_seed(0)
    assert _train(nn.RNN(V, 32), nn.Linear(32, V), batch, steps=200) > 0.95


def test_lstm_learns_a_latch_that_a_plain_rnn_of_the_same_size_does_not():
    """Output the symbol seen at the most recent flag: an echo whose delay k varies and is
    often 20+ steps. The LSTM's gates hold the symbol; the tanh RNN, same hidden size and
    training budget, keeps only what recent inputs have not overwritten."""
    V, T, B, H = 4, 50, 32, 16

    def batches(seed):
        rng = np.random.default_rng(seed)

        def batch():
            s = rng.integers(0, V, (T, B))
            flag = rng.random((T, B)) < 0.05
            flag[0] = True
            last = np.maximum.accumulate(np.where(flag, np.arange(T)[:, None], 0), axis=0)
            x = np.zeros((T, B, V + 1), np.float32)
            np.put_along_axis(x, s[..., None], 1, -1)
            x[..., V] = flag
            return Tensor(x), np.take_along_axis(s, last, 0)
        return batch

    tg.manual_seed(0)
    lstm_acc = _train(nn.LSTM(V + 1, H), nn.Linear(H, V), batches(0), steps=300)
    tg.manual_seed(0)
    rnn_acc = _train(nn.RNN(V + 1, H), nn.Linear(H, V), batches(0), steps=300)
    assert lstm_acc > 0.95 and rnn_acc < 0.7, (lstm_acc, rnn_acc)


@pytest.mark.parametrize("odd", range(6), ids=["x", "h", "w_ih", "w_hh", "b_ih", "b_hh"])
def test_the_fused_step_refuses_any_one_input_of_another_dtype(odd):
    from tinygrad_rnn.fast.steps import RNNCellStep
    shapes = [(2, 3), (2, 4), (4, 3), (4, 4), (4,), (4,)]
    args = [tg.Tensor(np.zeros(s, np.float64 if i == odd else np.float32)) for i, s in enumerate(shapes)]
    with pytest.raises(tg.ShapeError, match=r"rnn_cell: dtype mismatch \(.*float64"):
        RNNCellStep.apply(*args, nonlinearity="tanh")
    if odd > 0:  # with token ids for x too
        with pytest.raises(tg.ShapeError, match=r"rnn_cell: dtype mismatch"):
            RNNCellStep.apply(np.array([0, 2]), *args[1:], nonlinearity="tanh")
