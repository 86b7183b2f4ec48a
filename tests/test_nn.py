"""Modules, layers, initialisers, losses and gradient clipping; PyTorch's names hard-coded."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn import init
from tinygrad_rnn.nn.utils import clip_grad_norm_, clip_grad_value_, functional_call
from sum_order import assert_equal_up_to_sum_order
from tolerances import EXACT64, GRADCHECK

# A tolerance's comment gives the largest error seen over 3 runs with fresh random data, as a
# fraction of what it allows and as |error| (measure: python tests/measure_tolerances.py tests/test_nn.py)


def f64(x, requires_grad=True):
    return Tensor(np.asarray(x, dtype=np.float64), requires_grad=requires_grad)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.rnn = nn.GRU(4, 8)
        self.head = nn.Linear(8, 10)
        self.extra = nn.ModuleList([nn.Linear(2, 3), nn.Dropout(0.2)])
        self.scale = Tensor([2.0])  # a plain tensor: not a parameter

    def forward(self, ids):
        out, _ = self.rnn(self.emb(ids))
        return self.head(out)


# ----------------------------------------------------------------------------- Parameter / Module
def test_parameter_is_a_leaf_tensor_that_requires_grad():
    t = Tensor(np.ones((2, 3), np.float32))
    p = nn.Parameter(t)
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf
    assert p.data is t.data  # shares storage, as torch.nn.Parameter does
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32
    assert not nn.Parameter(np.zeros(2), requires_grad=False).requires_grad
    y = p * 2.0
    assert type(y) is Tensor and y.grad_fn is not None
    assert repr(p).startswith("Parameter containing:\nTensor(")


def test_module_registers_parameters_and_submodules_by_assignment():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["emb.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                     "rnn.bias_hh_l0", "head.weight", "head.bias", "extra.0.weight", "extra.0.bias"]
    assert len(list(net.parameters())) == 9
    assert [type(m).__name__ for m in net.children()] == ["Embedding", "GRU", "Linear", "ModuleList"]
    assert [type(m).__name__ for m in net.modules()] == ["Net", "Embedding", "GRU", "Linear",
                                                         "ModuleList", "Linear", "Dropout"]
    assert len(net.extra) == 2 and isinstance(net.extra[-1], nn.Dropout)
    assert [n for n, _ in net.named_parameters(recurse=False)] == []


def test_module_assignment_rules():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'weight'"):
        lin.weight = lin.weight * 2.0
    lin.bias = None  # removing a parameter is allowed
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    new = nn.Parameter(np.zeros((2, 2), np.float32))
    lin.weight = new
    assert lin.weight is new and list(lin.parameters()) == [new]

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    net = Net()
    del net.head
    assert "head.weight" not in net.state_dict()


def test_shared_parameters_listed_once_but_saved_under_every_name():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight  # tied weights

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = a, b

    m = Tied()
    assert len(list(m.parameters())) == 3
    assert list(m.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]


def test_train_eval_and_zero_grad_reach_every_module():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net(np.array([[1, 2], [3, 4]])).sum().backward()
    unused = {id(net.extra[0].weight), id(net.extra[0].bias)}  # forward() does not touch `extra`
    assert all(p.grad is not None for p in net.parameters() if id(p) not in unused)
    net.zero_grad(set_to_none=False)
    assert all(p.grad is None or not p.grad.data.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_double_float_and_to_convert_in_place():
    net = Net()
    params = list(net.parameters())
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert all(a is b for a, b in zip(params, net.parameters()))  # same objects, new arrays
    assert net(np.array([[1, 2]])).dtype == np.float64
    assert net.float().emb.weight.dtype == np.float32
    assert net.to(np.float64).head.bias.dtype == np.float64


def test_repr_shows_the_tree():
    assert repr(Net()) == (
        "Net(\n"
        "  (emb): Embedding(10, 4)\n"
        "  (rnn): GRU(4, 8)\n"
        "  (head): Linear(in_features=8, out_features=10, bias=True)\n"
        "  (extra): ModuleList(\n"
        "    (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "    (1): Dropout(p=0.2, inplace=False)\n"
        "  )\n"
        ")")
    assert repr(nn.LSTM(10, 20, 2, batch_first=True, bidirectional=True)) == \
        "LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)"
    assert repr(nn.RNN(3, 4, nonlinearity="relu", bias=False)) == "RNN(3, 4, nonlinearity=relu, bias=False)"
    assert repr(nn.LSTMCell(3, 4)) == "LSTMCell(3, 4)"


# ----------------------------------------------------------------------------- state_dict
def _rnn_keys(num_layers, bidirectional, bias=True):
    keys = []
    for layer in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
            keys += [f"{n}_l{layer}{sfx}" for n in names]
    return keys


# PyTorch 2.x: list(torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True).state_dict())
TORCH_LSTM_2L_BI = [
    "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
    "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
    "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
    "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse"]


@pytest.mark.parametrize("module,expected", [
    (nn.Linear(10, 20), {"weight": (20, 10), "bias": (20,)}),
    (nn.Linear(10, 20, bias=False), {"weight": (20, 10)}),
    (nn.Embedding(100, 16), {"weight": (100, 16)}),
    (nn.RNNCell(10, 20), {"weight_ih": (20, 10), "weight_hh": (20, 20), "bias_ih": (20,), "bias_hh": (20,)}),
    (nn.LSTMCell(10, 20), {"weight_ih": (80, 10), "weight_hh": (80, 20), "bias_ih": (80,), "bias_hh": (80,)}),
    (nn.GRUCell(10, 20), {"weight_ih": (60, 10), "weight_hh": (60, 20), "bias_ih": (60,), "bias_hh": (60,)}),
    (nn.RNN(10, 20), {"weight_ih_l0": (20, 10), "weight_hh_l0": (20, 20), "bias_ih_l0": (20,), "bias_hh_l0": (20,)}),
    (nn.GRU(10, 20, bias=False), {"weight_ih_l0": (60, 10), "weight_hh_l0": (60, 20)}),
    (nn.LSTM(10, 20, num_layers=2, bidirectional=True),
     dict(zip(TORCH_LSTM_2L_BI, [(80, 10), (80, 20), (80,), (80,)] * 2 + [(80, 40), (80, 20), (80,), (80,)] * 2))),
])
def test_state_dict_keys_and_shapes_match_pytorch(module, expected):
    sd = module.state_dict()
    assert list(sd) == list(expected)
    assert {k: v.shape for k, v in sd.items()} == expected
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in sd.values())


@pytest.mark.parametrize("Layer", [nn.RNN, nn.GRU, nn.LSTM])
def test_sequence_layer_keys_for_every_layout(Layer):
    for layers, bi, bias in [(1, False, True), (3, True, True), (2, False, False)]:
        assert list(Layer(5, 7, num_layers=layers, bidirectional=bi, bias=bias).state_dict()) == \
            _rnn_keys(layers, bi, bias)
    assert _rnn_keys(2, True) == TORCH_LSTM_2L_BI


def test_state_dict_is_a_snapshot_and_load_roundtrips():
    tg.manual_seed(0)
    a = Net()
    sd = a.state_dict()
    sd["head.bias"][:] = 123.0
    assert not (a.head.bias.data == 123.0).any()
    tg.manual_seed(1)
    b = Net()
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    assert not np.allclose(a(ids).data, b(ids).data)
    weight = b.head.weight
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(a(ids).data, b(ids).data)
    assert b.head.weight is weight  # loaded in place
    b.load_state_dict({k: Tensor(v) for k, v in a.state_dict().items()})  # Tensors work too


def test_load_state_dict_names_every_mismatch_at_once_and_writes_nothing():
    m = nn.LSTM(3, 4)
    before = m.state_dict()
    sd = m.state_dict()
    del sd["bias_hh_l0"]
    sd["weight_ih_l1"] = np.zeros((16, 4), np.float32)
    sd["weight_hh_l0"] = np.zeros((16, 5), np.float32)
    sd["weight_ih_l0"] = np.zeros((16, 3), np.float64)
    sd["bias_ih_l0"] = np.ones(16, np.float32)
    with pytest.raises(RuntimeError) as err:
        m.load_state_dict(sd)
    msg = str(err.value)
    assert msg.startswith("Error(s) in loading state_dict for LSTM:")
    assert 'Missing key(s) in state_dict: "bias_hh_l0".' in msg
    assert 'Unexpected key(s) in state_dict: "weight_ih_l1".' in msg
    assert "size mismatch for weight_hh_l0: copying a param with shape (16, 5)" in msg
    assert "the shape in current model is (16, 4)" in msg
    assert "dtype mismatch for weight_ih_l0: checkpoint has float64, the model has float32" in msg
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # bias_ih_l0 was fine but is not written either
    # strict=False tolerates key differences (not shape/dtype ones) and reports them
    ok = m.state_dict()
    del ok["bias_hh_l0"]
    ok["extra"] = np.zeros(1)
    ok["bias_ih_l0"] = np.ones(16, np.float32)
    assert m.load_state_dict(ok, strict=False) == (["bias_hh_l0"], ["extra"])
    assert (m.bias_ih_l0.data == 1).all()


# ----------------------------------------------------------------------------- layers
def test_linear_matches_numpy_for_1d_2d_3d_inputs():
    tg.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    W, b = lin.weight.data, lin.bias.data
    rng = np.random.default_rng(0)
    for shape in [(4,), (5, 4), (2, 5, 4)]:
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(lin(f64(x)).data, x @ W.T + b, rtol=EXACT64)  # exact in every run
    names, params = zip(*lin.named_parameters())
    assert tg.gradcheck(lambda x, *ps: functional_call(lin, dict(zip(names, ps)), (x,)),
                        (f64(rng.standard_normal((2, 3, 4))), *params), **GRADCHECK)
    assert nn.Linear(4, 3, bias=False)(tg.ones(2, 4)).shape == (2, 3)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 5, 32, 2048])
def test_linear_is_one_node_with_the_op_by_op_numbers(rows, bias, dtype):
    """F.linear on rows records one `Linear` node; its values and gradients are those of
    x @ w.T + b recorded as three ops, bit for bit, but for w's: the node computes g.T @ x where
    the graph computes (x.T @ g).T, the same terms summed in the order the BLAS picks for each
    orientation (tests/sum_order.py)."""
    rng = np.random.default_rng(rows)
    arrays = [rng.standard_normal(s).astype(dtype) for s in ((rows, 256), (65, 256), (65,))][:3 if bias else 2]

    def run(fused):
        x, w, *b = (Tensor(a, requires_grad=True) for a in arrays)
        y = F.linear(x, w, *b) if fused else (x @ w.T + b[0] if b else x @ w.T)
        assert (type(y._ctx).__name__ == "Linear") == fused
        (y * y).sum().backward()
        return [y.data] + [t.grad.data for t in (x, w, *b)]

    fused, op_by_op = run(True), run(False)
    for i, (a, b) in enumerate(zip(fused, op_by_op)):
        if i == 2:  # dL/dw = g.T @ x with g = 2y
            assert_equal_up_to_sum_order(a, b, 2 * np.abs(fused[0]).T @ np.abs(arrays[0]), "dL/dw")
        else:
            np.testing.assert_array_equal(a, b)


def test_linear_names_itself_and_the_shapes_it_cannot_combine():
    with pytest.raises(ValueError, match=r"Linear.*weight \(3, 5\)"):
        F.linear(Tensor(np.ones((2, 4))), Tensor(np.ones((3, 5))))
    with pytest.raises(ValueError, match=r"Linear.*bias \(4,\)"):
        F.linear(Tensor(np.ones((2, 5))), Tensor(np.ones((3, 5))), Tensor(np.ones(4)))

def test_default_initialisations():
    tg.manual_seed(0)
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    for p in (lin.weight, lin.bias):
        assert -bound <= p.data.min() < -0.9 * bound and 0.9 * bound < p.data.max() <= bound
    emb = nn.Embedding(1000, 50)
    assert abs(emb.weight.data.mean()) < 0.02 and abs(emb.weight.data.std() - 1) < 0.02


def test_embedding_gathers_rows_and_scatter_adds_gradients():
    emb = nn.Embedding(5, 3)
    ids = np.array([[0, 2], [2, 4]])
    out = emb(ids)
    np.testing.assert_array_equal(out.data, emb.weight.data[ids])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.data[:, 0], [1, 0, 2, 0, 1])
    # indices overwritten between forward and backward (a reused batch buffer) change nothing:
    # the op kept a copy, which its unchecked numba scatter relies on
    emb.zero_grad()
    out = emb(ids)
    ids[:] = 10**9
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.data[:, 0], [1, 0, 2, 0, 1])


def test_dropout_module():
    d = nn.Dropout(0.25)
    x = tg.ones(200, 200)
    tg.manual_seed(0)
    y = d(x).data
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert d.eval()(x) is x
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


# ----------------------------------------------------------------------------- init
def test_init_functions_are_seeded_and_keep_dtype():
    def draw():
        tg.manual_seed(42)
        t = Tensor(np.empty((30, 20), np.float64))
        return [fn(t).data.copy() for fn in (init.uniform_, init.normal_, init.xavier_uniform_, init.orthogonal_)]

    a, b = draw(), draw()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    uni, normal, xavier, _ = a
    assert uni.min() >= 0 and uni.max() < 1 and uni.dtype == np.float64
    assert abs(normal.std() - 1) < 0.1
    bound = math.sqrt(6 / (20 + 30))
    assert np.abs(xavier).max() <= bound and np.abs(xavier).max() > 0.9 * bound
    t = Tensor(np.ones((3, 3), np.float32))
    assert not init.zeros_(t).data.any() and t.dtype == np.float32
    assert (init.constant_(t, 0.5).data == 0.5).all()


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8)])
def test_orthogonal_gives_orthonormal_rows_or_columns(shape):
    tg.manual_seed(0)
    q = init.orthogonal_(Tensor(np.empty(shape)), gain=2.0).data / 2.0
    small = min(shape)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    # largest error seen: 2.6e-16
    np.testing.assert_allclose(gram, np.eye(small), rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- losses
def _np_nll(logp, t, ignore_index=-100, reduction="mean"):
    keep = t != ignore_index
    losses = -np.where(keep, logp[np.arange(len(t)), np.where(keep, t, 0)], 0)
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / keep.sum()}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_and_cross_entropy_losses(reduction):
    rng = np.random.default_rng(0)
    x = f64(rng.standard_normal((6, 5)))
    t = np.array([0, 4, -100, 2, 2, 1])
    logp = x.log_softmax(-1)
    nll = nn.NLLLoss(reduction=reduction)(logp, t)
    ce = nn.CrossEntropyLoss(reduction=reduction)(x, t)
    np.testing.assert_allclose(nll.data, _np_nll(logp.data, t, reduction=reduction), rtol=EXACT64)  # exact in every run
    np.testing.assert_allclose(ce.data, nll.data, rtol=1e-14)  # largest error seen: 1/40, 2.5e-16 relative
    assert tg.gradcheck(lambda x: F.nll_loss(x.log_softmax(-1), t, reduction=reduction), (x,), **GRADCHECK)


def test_nll_loss_spatial_layout_and_errors():
    rng = np.random.default_rng(1)
    x = f64(rng.standard_normal((2, 4, 3)))  # (N, C, d1)
    t = rng.integers(0, 4, (2, 3))
    want = _np_nll(np.moveaxis(x.data, 1, -1).reshape(-1, 4), t.reshape(-1), reduction="none").reshape(2, 3)
    np.testing.assert_allclose(F.nll_loss(x, t, reduction="none").data, want, rtol=EXACT64)  # exact in every run
    assert tg.gradcheck(lambda x: F.nll_loss(x, t), (x,), **GRADCHECK)
    np.testing.assert_allclose(F.nll_loss(f64([0.1, 0.5, 0.4]), np.array(1)).data, -0.5)
    with pytest.raises(IndexError, match="out of range"):
        F.nll_loss(x, np.full((2, 3), 4))
    with pytest.raises(ValueError, match="does not match"):
        F.nll_loss(x, np.zeros(2, np.int64))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(reduction):
    rng = np.random.default_rng(2)
    x, y = f64(rng.standard_normal((3, 4))), rng.standard_normal((3, 4))
    got = nn.MSELoss(reduction=reduction)(x, y)
    sq = (x.data - y) ** 2
    want = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    np.testing.assert_allclose(got.data, want, rtol=EXACT64)  # exact in every run
    assert tg.gradcheck(lambda a, b: F.mse_loss(a, b, reduction=reduction), (x, f64(y)), **GRADCHECK)
    with pytest.raises(ValueError, match="differs"):
        F.mse_loss(x, np.zeros(4))
    with pytest.raises(ValueError):
        nn.MSELoss(reduction="avg")


# ----------------------------------------------------------------------------- clipping
def _with_grads(grads):
    params = []
    for g in grads:
        p = nn.Parameter(np.zeros_like(g))
        p.grad = Tensor(g.copy())
        params.append(p)
    return params


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(0.1, 10), seed=st.integers(0, 1000))
def test_clip_grad_norm_scales_by_the_global_norm(scale, max_norm, seed):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s) * scale for s in [(3, 4), (5,), (2, 2, 2)]]
    params = _with_grads(grads)
    total = np.sqrt(sum((g ** 2).sum() for g in grads))
    norm = clip_grad_norm_(params + [nn.Parameter(np.zeros(2))], max_norm)  # a grad-less param is skipped
    # largest errors seen (runs of 30 draws): 1/45 and 1/23 of the bound
    assert norm.item() == pytest.approx(total, rel=1e-14)
    coef = min(1.0, max_norm / (total + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.data, g * coef, rtol=1e-14)
    new_total = np.sqrt(sum((p.grad.data ** 2).sum() for p in params))
    assert new_total <= max_norm * (1 + 1e-9)


def test_clip_grad_norm_other_norms_and_nonfinite():
    params = _with_grads([np.array([3.0, -4.0]), np.array([-7.0])])
    assert clip_grad_norm_(params, 100.0, norm_type=math.inf).item() == 7.0
    assert clip_grad_norm_(params, 100.0, norm_type=1).item() == 14.0
    assert clip_grad_norm_(params[0], 100.0).item() == 5.0  # a single tensor is accepted
    bad = _with_grads([np.array([1.0, np.nan])])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(bad, 1.0, error_if_nonfinite=True)
    assert math.isnan(clip_grad_norm_(bad, 1.0).item())
    assert np.isnan(bad[0].grad.data).all()  # as in PyTorch, a NaN norm spreads


def test_clip_grad_value_clamps_elementwise():
    g = np.array([[-7.0, 0.5], [5.0, 12.0]])
    (p,) = _with_grads([g])
    clip_grad_value_([p], 5.0)
    np.testing.assert_array_equal(p.grad.data, np.clip(g, -5, 5))


def test_functional_call_swaps_temporarily():
    lin = nn.Linear(2, 2)
    w = lin.weight
    out = functional_call(lin, {"weight": Tensor(np.zeros((2, 2), np.float32))}, (tg.ones(1, 2),))
    np.testing.assert_array_equal(out.data, lin.bias.data[None])
    assert lin.weight is w
    net = Net()
    functional_call(net, {"head.bias": Tensor(np.zeros(10, np.float32))}, (np.array([[1]]),))
    assert isinstance(net.head.bias, nn.Parameter)
