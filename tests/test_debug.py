"""debug: the op profiler (exact counts, backward only when run, everything restored, nesting,
TINYGRAD_RNN_DEBUG=1) and the gradient-check runner (passes; a broken op fails, named)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Function, Tensor, autograd, cli, debug, op_table
from tinygrad_rnn.kernels import K
from tolerances import GRADCHECK


def three_matmuls_two_tanh():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    W = Tensor(rng.standard_normal((3, 3)), requires_grad=True)
    V = Tensor(rng.standard_normal((3, 1)), requires_grad=True)
    return ((x @ W).tanh() @ W).tanh() @ V, (x, W, V)


def engine_state():
    """Every attribute the profiler may replace, by identity."""
    classes = debug._function_classes()
    return ([(c, c.__dict__.get("apply"), c.__dict__.get("backward")) for c in classes],
            autograd.backward, dict(vars(K)))


def test_counts_are_exact_and_backward_is_counted_only_when_run():
    three_matmuls_two_tanh()  # compile outside the profile
    with debug.profile() as prof:
        out, _ = three_matmuls_two_tanh()
    assert {name: s.calls for name, s in prof.ops.items()} == {"MatMul": 3, "Tanh": 2}
    assert all(s.backward_calls == 0 and s.backward_s == 0 for s in prof.ops.values())
    assert prof.backward_calls == 0
    # every matmul forward runs the matmul kernel once, and the kernel time is the op's
    assert prof.kernels["matmul"][0] == 3 and prof.ops["MatMul"].kernel_calls == 3
    assert 0 < prof.ops["MatMul"].kernel_s <= prof.ops["MatMul"].forward_s

    with debug.profile() as prof:
        out, leaves = three_matmuls_two_tanh()
        out.sum().backward()
    calls = {name: (s.calls, s.backward_calls) for name, s in prof.ops.items() if name != debug.ENGINE}
    assert calls == {"MatMul": (3, 3), "Tanh": (2, 2), "Sum": (1, 1)}
    assert prof.backward_calls == 1 and all(t.grad is not None for t in leaves)
    for s in prof.ops.values():
        assert s.forward_s >= 0 and s.backward_s >= 0 and s.kernel_s >= 0
    assert prof.backward_s >= prof.ops["MatMul"].backward_s + prof.ops["Tanh"].backward_s


def test_results_are_unchanged_under_the_profiler():
    out, leaves = three_matmuls_two_tanh()
    out.sum().backward()
    plain = [out.data] + [t.grad.data for t in leaves]
    with debug.profile():
        out, leaves = three_matmuls_two_tanh()
        out.sum().backward()
    for a, b in zip(plain, [out.data] + [t.grad.data for t in leaves]):
        assert np.array_equal(a, b)


def test_everything_is_restored_after_exit_even_on_error():
    three_matmuls_two_tanh()
    before = engine_state()
    with pytest.raises(ZeroDivisionError):
        with debug.profile():
            assert Function.__dict__["apply"] is not before[0][0][1]  # really patched inside
            1 / 0
    after = engine_state()
    assert after[1] is before[1] and after[2] == before[2]
    assert all(a[0] is b[0] and a[1] is b[1] and a[2] is b[2] for a, b in zip(after[0], before[0]))
    prof = debug.profile()
    with prof:
        pass
    three_matmuls_two_tanh()[0].sum().backward()  # after exit: nothing is recorded
    assert prof.ops == {} and prof.kernels == {}


def test_profiles_nest():
    three_matmuls_two_tanh()
    before = engine_state()
    with debug.profile() as outer:
        three_matmuls_two_tanh()
        with debug.profile() as inner:
            three_matmuls_two_tanh()
        three_matmuls_two_tanh()  # the outer profile is still recording
    assert inner.ops["MatMul"].calls == 3 and outer.ops["MatMul"].calls == 9
    assert engine_state()[1] is before[1] and Function.__dict__["apply"] is before[0][0][1]


def test_table_is_sorted_by_total_time_and_printable():
    three_matmuls_two_tanh()
    with debug.profile() as prof:
        for _ in range(3):
            three_matmuls_two_tanh()[0].sum().backward()
    text = str(prof)
    assert text == prof.table()
    op_lines = text.split("\n\n")[0].splitlines()[1:-1]
    totals = [float(line.split()[-1]) for line in op_lines]
    assert totals == sorted(totals, reverse=True) and len(op_lines) == len(prof.ops)
    assert "matmul" in text.split("\n\n")[1]
    assert len(prof.table(limit=1).split("\n\n")[0].splitlines()) == 3  # header, one op, summary


PROGRAM = """
import numpy as np, tinygrad_rnn as tg
x = tg.Tensor(np.ones((2, 3)), requires_grad=True)
w = tg.Tensor(np.ones((3, 3)), requires_grad=True)
((x @ w).tanh() @ w).sum().backward()
print("done")
"""


@pytest.mark.parametrize("flag", ["1", "0"])
def test_environment_variable_profiles_the_whole_process(flag):
    env = dict(os.environ, TINYGRAD_RNN_DEBUG=flag)
    res = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "done"
    if flag == "1":
        assert "TINYGRAD_RNN_DEBUG=1" in res.stderr
        rows = {line.split()[0]: line.split() for line in res.stderr.splitlines() if line.strip()}
        assert rows["MatMul"][1:4:2] == ["2", "2"] and rows["Tanh"][1:4:2] == ["1", "1"]
    else:
        assert "MatMul" not in res.stderr


def test_cli_profile_runs_a_few_training_steps(capsys):
    args = ["profile", "--steps", "2", "--warmup", "1", "--hidden", "16", "--seq-len", "8", "--batch-size", "4"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "2 training steps of a rnn char-RNN" in out
    assert re.search(r"^CrossEntropy\s+2\s", out, flags=re.M), out


# ----------------------------------------------------------------------------- gradcheck runner
def test_gradcheck_runner_passes_on_every_op_and_cell(capsys):
    assert cli.main(["gradcheck", "--examples", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    n = len(op_table.OPS) + len(op_table.CELLS)
    assert f"{n} of {n} passed" in out
    for name in ("matmul_2d", "cross_entropy_NC", "RNNCell[relu] x3", "LSTMCell x3", "GRUCell x3"):
        assert re.search(rf"^{re.escape(name)}\s.*\spass$", out, flags=re.M), name


def test_gradcheck_runner_reports_errors_and_selects_by_pattern():
    results = debug.check_gradients("matmul_*", seed=1, examples=2, **GRADCHECK)
    assert {r.name for r in results} == {s.name for s in op_table.OPS if s.name.startswith("matmul_")}
    # largest |analytic - numeric| seen over 3 runs: 8.1e-10
    # (measure: python tests/measure_tolerances.py tests/test_debug.py)
    assert all(r.passed and r.examples == 2 and 0 <= r.max_abs < 2e-8 for r in results)
    with pytest.raises(ValueError, match="no op matches 'nonesuch'"):
        debug.check_gradients("nonesuch")


class WrongSquare(Function):
    """x**2 with the gradient off by a factor 3/2: the kind of bug gradcheck exists for."""

    def forward(self, x):
        self.saved = (x,)
        return x * x

    def backward(self, g):
        (x,) = self.saved
        return 3 * x * g


def test_a_broken_op_fails_the_runner_naming_it(monkeypatch, capsys):
    monkeypatch.setattr(op_table, "OPS", list(op_table.OPS))  # registration undone afterwards
    op_table.register(op_table.op("wrong_square", WrongSquare.apply, np.square))
    with pytest.raises(ValueError, match="already registered"):
        op_table.register(op_table.op("wrong_square", WrongSquare.apply, np.square))
    assert cli.main(["gradcheck", "--op", "*square*", "--examples", "3"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^wrong_square\s.*\sFAIL$", out, flags=re.M), out
    assert re.search(r"^x_squared\s.*\spass$", out, flags=re.M), out
    assert "FAIL wrong_square: gradcheck failed" in out and "1 of 2 passed" in out


def test_an_op_that_crashes_is_a_failure_not_a_crash(monkeypatch):
    def explode(x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(op_table, "OPS", list(op_table.OPS))
    op_table.register(op_table.op("explodes", explode, np.square))
    (r,) = debug.check_gradients("explodes", examples=2)
    assert not r.passed and "kernel exploded" in r.message and np.isnan(r.max_abs)
    assert "FAIL explodes: RuntimeError: kernel exploded" in debug.format_checks([r])


def test_gradcheck_cli_unknown_op_is_a_clear_error(capsys):
    assert cli.main(["gradcheck", "--op", "nonesuch"]) == 2
    assert "no op matches 'nonesuch'" in capsys.readouterr().err


def test_tg_debug_is_reachable_from_the_package():
    assert tg.debug is debug
