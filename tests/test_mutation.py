"""The tests can fail: each mutant of `mutation_score.py` (a backward wrong by 1e-4 relative, an
input's gradient dropped or swapped, an optimizer step wrong by 1e-4, a kernel wrong by 1e-6)
makes the test guarding it fail. `python tests/mutation_score.py` prints the same as a table."""
import numpy as np
import pytest

import mutation_score as ms
import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, nn
from tinygrad_rnn.autograd import Function
from tinygrad_rnn.op_table import OPS
from tinygrad_rnn.ops.elementwise import Add
from tinygrad_rnn.fast.steps import RNNCellStep

MUTANTS = ms.all_mutants()

# Swaps that may change no gradient in the tests that run them, and why: "not planted" is
# allowed for these alone.
_DRAWN = "two gradients of one shape only where hypothesis draws equal sizes"
UNPLANTABLE = {
    "op:add-swap": "add hands both inputs one array",
    "op:add_method-swap": "add hands both inputs one array",
    "op:matmul_1d_2d-swap": "a (k,) and b (k, m) never have gradients of one shape",
    "op:matmul_2d_1d-swap": "a (n, k) and b (k,) never have gradients of one shape",
    "op:matmul_2d-swap": _DRAWN,  # n = k = m
    "op:matmul_batched-swap": _DRAWN,
    "op:matmul_batched_any-swap": _DRAWN,
    "op:linear-swap": _DRAWN,  # x (n, k), weight (m, k): n = m
    "op:linear_no_bias-swap": _DRAWN,
    "op:cat-swap": _DRAWN,
    # the biases get one gradient; x and h, w_ih and w_hh have one shape only where I = H
    "step:RNNCellStep-swap": _DRAWN,
    "sequence:Projection-swap": "x (T, B, I) and W (4H, I) never have gradients of one shape",
    "sequence:LSTMStep-swap": "P (T, B, 4H), (h, c) (2, B, H), W_hh (4H, H) and b (4H,) never do either",
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_the_tests_catch_the_mutant(mutant):
    result = ms.run(mutant)
    if result.verdict == "not planted":
        assert mutant.name in UNPLANTABLE, f"{mutant.name}: the plant never changed a value"
    else:
        assert result.verdict == "detected", f"{mutant.name}: the tests passed with the error planted"


def test_every_row_of_the_op_table_is_a_target():
    targets = {m.target for m in MUTANTS}
    missing = [s.name for s in OPS if f"op:{s.name}" not in targets and s.name not in ms.NO_NODE]
    assert not missing, f"op table rows without mutants (add them to mutation_score._FUNCTIONS): {missing}"


# Functions with a backward that no mutant plants in, and why.
UNTARGETED = {}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_function_of_the_package_is_a_target():
    targeted = set(ms.ROW_FUNCTION.values()) | {fn for fn, _ in ms.STEPS} | {fn for fn, _ in ms.SEQUENCE}
    functions = {f for f in _subclasses(Function) if f.__module__.startswith("tinygrad_rnn.")}
    left_out = sorted(f.__name__ for f in functions - targeted)
    assert left_out == sorted(UNTARGETED), f"Functions no mutant plants in: {left_out}"


@pytest.mark.parametrize("name", sorted(ms.NO_NODE))
def test_rows_left_out_record_no_node(name):
    spec = next(s for s in OPS if s.name == name)
    x = Tensor(np.ones(3), requires_grad=True)
    out = spec.fn(x, **({"training": True} if name == "dropout_p0" else {"p": 0.5}))
    assert out._ctx is None or out is x, f"{name} records a node, so it has a backward to mutate"


def test_a_plant_that_changes_nothing_is_not_planted():
    # the harness itself: a scale of add's gradient where nothing needs one changes nothing
    mutant = ms.Mutant("op:add", "scale:a", ms.plant_in_backward(Add, ("scale", 0), (0, 1)),
                       lambda mp: (Tensor(np.ones(2)) + Tensor(np.ones(2), requires_grad=True)).sum().backward())
    assert ms.run(mutant).verdict == "not planted"


def _elman_grads(ids, plant=None):
    """The gradients of a fused Elman cell's weights over 5 steps fed token ids or dense rows
    (the engine's run path either way), with `plant` installed if given, and whether it
    changed anything."""
    log = ms.Log()
    with pytest.MonkeyPatch.context() as mp:
        if plant is not None:
            plant(mp, log)
        tg.manual_seed(0)
        cell = nn.RNNCell(3, 4).double()
        rng = np.random.default_rng(0)
        h = Tensor(rng.standard_normal((2, 4)), requires_grad=True)
        xs = rng.integers(0, 3, (5, 2)) if ids else Tensor(rng.standard_normal((5, 2, 3)), requires_grad=True)
        for t in range(5):
            h = cell(xs[t], h)
        (h * h).sum().backward()
        return [p.grad.data for p in cell.parameters()], log.changed


@pytest.mark.parametrize("ids", [False, True], ids=["dense", "token-ids"])
@pytest.mark.parametrize("how", ["scale", "drop"])
@pytest.mark.parametrize("slot", [2, 3, 4, 5], ids=["w_ih", "w_hh", "b_ih", "b_hh"])
def test_a_plant_moves_only_the_gradient_it_names(ids, how, slot):
    # the hardest case: the weights get RowsGrad runs (W_ih one only for token ids), the two
    # biases one shared run
    base, _ = _elman_grads(ids)
    got, changed = _elman_grads(ids, ms.plant_in_backward(RNNCellStep, (how, slot), range(6)))
    assert changed
    factor = 1 + ms.GRAD_ERROR if how == "scale" else 0
    for i, (g, b) in enumerate(zip(got, base)):  # in order w_ih, w_hh, b_ih, b_hh
        np.testing.assert_allclose(g, b * factor if i == slot - 2 else b, rtol=1e-13, atol=0, err_msg=f"parameter {i}")


def test_the_score_script_prints_a_row_per_target_and_the_score(capsys):
    assert ms.main(["kernel:sum_rows", "optim:SGD"]) == 0
    out = capsys.readouterr().out
    assert "| kernel:sum_rows | 1 | 1/1 | - | - | test_fast_kernel_equals_its_reference: AssertionError |" in out
    assert "| optim:SGD | 3 | 3/3 | - | - |" in out
    assert "mutation score: 4/4 planted mutants detected (0 not planted" in out
