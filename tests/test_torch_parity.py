"""PyTorch parity: a PyTorch state_dict converted to numpy loads into the same-named layer and
gives the same outputs and gradients. Skipped when torch is not installed (it is optional:
`pip install torch` to run these)."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

torch = pytest.importorskip("torch")

LAYERS = [
    ("Linear", dict(in_features=5, out_features=4), (3, 5)),
    ("RNNCell", dict(input_size=5, hidden_size=4), (3, 5)),
    ("RNNCell", dict(input_size=5, hidden_size=4, nonlinearity="relu"), (3, 5)),
    ("LSTMCell", dict(input_size=5, hidden_size=4), (3, 5)),
    ("GRUCell", dict(input_size=5, hidden_size=4, bias=False), (3, 5)),
    ("RNN", dict(input_size=5, hidden_size=4, num_layers=2, bidirectional=True), (6, 3, 5)),
    ("LSTM", dict(input_size=5, hidden_size=4, num_layers=2, batch_first=True), (3, 6, 5)),
    ("GRU", dict(input_size=5, hidden_size=4, bidirectional=True), (6, 3, 5)),
]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name, kwargs, shape", LAYERS, ids=[f"{n}{i}" for i, (n, _, _) in enumerate(LAYERS)])
def test_pytorch_weights_give_pytorchs_outputs_and_gradients(name, kwargs, shape):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(**kwargs).double()
    ours = getattr(nn, name)(**kwargs).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    x_t = torch.tensor(x, requires_grad=True)
    x_o = tg.Tensor(x, requires_grad=True)
    out_t, out_o = _first(theirs(x_t)), _first(ours(x_o))
    np.testing.assert_allclose(out_o.data, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)

    weights = rng.standard_normal(out_o.shape)  # a loss that weighs every output differently
    (out_t * torch.tensor(weights)).sum().backward()
    (out_o * tg.Tensor(weights)).sum().backward()
    np.testing.assert_allclose(x_o.grad.data, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    ours_by_name = dict(ours.named_parameters())
    for key, p in theirs.named_parameters():
        np.testing.assert_allclose(ours_by_name[key].grad.data, p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=key)


def test_default_initialisation_has_pytorchs_distribution_bounds():
    for name, kwargs in [("RNNCell", dict(input_size=3, hidden_size=16)), ("Linear", dict(in_features=9, out_features=5))]:
        theirs, ours = getattr(torch.nn, name)(**kwargs), getattr(nn, name)(**kwargs)
        for (k, p_t), (k2, p_o) in zip(theirs.named_parameters(), ours.named_parameters()):
            assert k == k2 and tuple(p_t.shape) == p_o.shape and p_o.dtype == np.float32
            bound_t = float(p_t.detach().abs().max())
            bound_o = float(np.abs(p_o.data).max())
            # both draw from the same U(-b, b): the largest magnitudes of many draws approach b
            assert bound_o <= 1 / np.sqrt(kwargs.get("hidden_size", kwargs.get("in_features"))) + 1e-7
            assert bound_t <= 1 / np.sqrt(kwargs.get("hidden_size", kwargs.get("in_features"))) + 1e-7
