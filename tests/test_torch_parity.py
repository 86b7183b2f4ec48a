"""PyTorch parity: a PyTorch state_dict converted to numpy loads into the same-named layer and
gives the same outputs and gradients. Skipped when torch is not installed (it is optional:
`pip install -e '.[parity]'` to run these), except under TINYGRAD_RNN_REQUIRE_TORCH=1, which
.ci/run sets: there a missing torch fails the run, so CI never reports parity it did not check."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

REQUIRE_TORCH = "TINYGRAD_RNN_REQUIRE_TORCH"


def import_torch_or_skip():
    """torch, or a skip of the calling module; under TINYGRAD_RNN_REQUIRE_TORCH=1 a failure."""
    try:
        import torch
    except ImportError as e:
        if os.environ.get(REQUIRE_TORCH) == "1":
            pytest.fail(f"{REQUIRE_TORCH}=1 but torch cannot be imported ({e}); "
                        f"pip install -e '.[parity]'", pytrace=False)
        pytest.skip(f"torch is not installed ({e})", allow_module_level=True)
    return torch


torch = import_torch_or_skip()

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


_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError, as on a machine without it
import pytest
sys.exit(pytest.main(["-rs", "-p", "no:cacheprovider", sys.argv[1]]))
"""


@pytest.mark.parametrize("required", [False, True])
def test_without_torch_this_file_skips_unless_torch_is_required(required):
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_TORCH}
    if required:
        env[REQUIRE_TORCH] = "1"
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, __file__], capture_output=True,
                          text=True, env=env, timeout=120)
    if required:  # pytest's exit code 2: an error while collecting the file
        assert proc.returncode == 2 and f"{REQUIRE_TORCH}=1 but torch cannot be imported" in proc.stdout, proc.stdout
    else:  # the whole file skipped, so no test collected: pytest's exit code 5
        assert proc.returncode == 5 and "SKIPPED" in proc.stdout and "torch is not installed" in proc.stdout, proc.stdout
