"""Differential fuzzing: random programs (tests/fuzz_programs.py) run on both kernel backends.

Each drawn program, a DAG of up to 200 ops (median about 80) over every differentiable op, must
- give the same forward value at every node and the same gradient at every node and leaf on
  the numba backend as on the plain-numpy reference backend, in float64 and in float32;
- in float32, stay close to its own float64 run;
- in float64, pass `tg.gradcheck` (finite differences) on the scalar it reduces to.

A failing example prints its program as a script (`Program.source()`) that runs it on both
backends and gradchecks it: paste it into a file to reproduce. Hypothesis shrinks it first.

CI runs the examples of the "ci" profile (tests/conftest.py). A long soak:

    HYPOTHESIS_PROFILE=soak python -m pytest tests/test_fuzz.py --hypothesis-show-statistics
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, event, find, given, note, settings
from hypothesis.errors import NoSuchExample

import tinygrad_rnn as tg
from tinygrad_rnn import kernels
from tinygrad_rnn.autograd import Function
from fuzz_programs import OPS, programs
from tolerances import FUZZ_GRADCHECK

# Distances closer than this to a kink (relu at 0, a tie in max, ...) are too close for the
# finite differences of gradcheck (eps 1e-5, times how much a leaf moves the kink's input) and
# for float32 rounding to be sure on which side of the kink a value lies. Jittered kink inputs
# make this rare: 0.4-0.5% of programs fall below it (soaks of 1,000 programs).
MARGIN = 1e-4

# |numba - numpy| <= TOL * max(1, max |numpy|) for every node's value and gradient. Both
# backends run the same formulas; they differ only where a kernel sums in another order.
# Largest differences seen over 160 programs (4 runs of 40), in units of max(1, max |numpy|):
# float64 1.3e-15 (1/16 of TOL), float32 4.8e-7 (1/21)
# (measure: python tests/measure_tolerances.py tests/test_fuzz.py)
TOL = {np.dtype(np.float64): 2e-14, np.dtype(np.float32): 1e-5}
# a float32 run against the float64 run of the same program: float32 rounding through up to
# 200 ops; largest seen on the same programs 3.4e-6 (1/29)
TOL_32_VS_64 = 1e-4


@pytest.fixture(autouse=True)
def restore_backend():
    yield
    tg.set_backend("numba")


def run(program, dtype, backend):
    """Forward and backward on one backend: ({name: value}, {name: gradient or None})."""
    tg.set_backend(backend)
    _, traced = program.compile(dtype)
    leaves = [tg.Tensor(v.astype(dtype), requires_grad=True) for v in program.leaf_values]
    loss, nodes = traced(*leaves)
    for t in nodes.values():
        t.retain_grad()  # a no-op on leaves, which keep their .grad anyway
    loss.backward()
    values = {name: t.data for name, t in nodes.items()}
    values["loss"] = loss.data
    grads = {name: None if t.grad is None else t.grad.data for name, t in nodes.items()}
    return values, grads


def assert_agree(program, got, want, tol, what):
    """Values or gradients agree node by node; the first node that differs, in program order,
    is named with the line that made it (where a forward difference starts, the bug is)."""
    for name, w in want.items():
        g = got[name]
        where = f"{what} of {name} ({program.line_of(name)})"
        assert (g is None) == (w is None), f"{where}: one backend has no gradient"
        if w is None:
            continue
        assert g.shape == w.shape, f"{where}: shape {g.shape} vs {w.shape}"
        assert np.all(np.isfinite(w)), f"{where} is not finite: {w}"
        err = np.max(np.abs(g.astype(np.float64) - w), initial=0.0)
        scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
        assert err <= tol * scale, f"{where}: max |difference| {err:.3g} > {tol:.0e} * {scale:.3g}\n{g}\nvs\n{w}"


def checked_margin(program, values):
    margin = program.kink_margin(values)
    event("near a kink: skipped" if margin < MARGIN else "fair program")
    assume(margin >= MARGIN)


def assert_runs_agree(program, got, want, tol, what):
    assert_agree(program, got[0], want[0], tol, f"{what} value")
    assert_agree(program, got[1], want[1], tol, f"{what} gradient")


@given(program=programs())
def test_backends_agree_on_every_value_and_gradient(program):
    note(program.source())
    ref64 = run(program, np.float64, "numpy")
    checked_margin(program, ref64[0])
    for op in program.ops:
        event(f"op {op}")
    assert_runs_agree(program, run(program, np.float64, "numba"), ref64, TOL[np.dtype(np.float64)], "float64")
    fast32 = run(program, np.float32, "numba")
    what = "float32 (DT = np.float32 in the reproducer)"
    assert_runs_agree(program, fast32, run(program, np.float32, "numpy"), TOL[np.dtype(np.float32)], what)
    assert_runs_agree(program, fast32, ref64, TOL_32_VS_64, "float32 against float64")


@given(program=programs())
def test_gradients_match_finite_differences(program):
    note(program.source())
    values, _ = run(program, np.float64, "numba")
    checked_margin(program, values)
    fn, _ = program.compile(np.float64)
    leaves = [tg.Tensor(v.copy(), requires_grad=True) for v in program.leaf_values]
    assert tg.gradcheck(fn, leaves, **FUZZ_GRADCHECK)


# ---------------------------------------------------------------------------- the fuzzer itself
def recorded_functions(program, dtype=np.float64) -> set:
    """Names of the `Function`s in the graph of the program's loss."""
    _, traced = program.compile(dtype)
    loss, _ = traced(*[tg.Tensor(v, requires_grad=True) for v in program.leaf_values])
    seen, stack, visited = set(), [loss], set()
    while stack:
        t = stack.pop()
        if t._ctx is None or id(t) in visited:
            continue
        visited.add(id(t))
        seen.add(type(t._ctx).__name__)
        stack.extend(p for p in t._ctx.parents if isinstance(p, tg.Tensor))
    return seen


def test_every_differentiable_op_is_in_the_fuzzer():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    in_ops = {c.__name__ for c in subclasses(Function) if c.__module__.startswith("tinygrad_rnn.ops.")}
    declared = {f for _, functions in OPS.values() for f in functions}
    assert in_ops - declared == set(), "ops the fuzzer never draws; add them to tests/fuzz_programs.py"


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_records_the_functions_it_declares(name):
    """Each op kind, drawn alone, records every Function it claims to cover: for each, the
    search ends at the first program that records it (a fixed number of programs instead
    would pass or fail with the seed, which hypothesis derives from this test's source)."""
    search = settings(max_examples=200, derandomize=True, database=None, phases=[Phase.generate])
    for function in OPS[name][1]:
        try:
            find(programs(min_ops=1, max_ops=2, ops=[name]), lambda p: function in recorded_functions(p),
                 settings=search)
        except NoSuchExample:
            pytest.fail(f"{name} never recorded {function} in 200 programs")


@settings(max_examples=3, database=None)
@given(program=programs(max_ops=40))
def test_the_printed_reproducer_is_the_program_that_ran(program):
    ref = run(program, np.float64, "numpy")
    checked_margin(program, ref[0])  # the script runs gradcheck too
    fast = run(program, np.float64, "numba")
    script = {}
    with contextlib.redirect_stdout(io.StringIO()) as out:
        exec(compile(program.source(), "<reproducer>", "exec"), script)
    assert script["ref"][0] == float(ref[0]["loss"]) and script["fast"][0] == float(fast[0]["loss"])
    for (name, _), g in zip(program.leaves, script["fast"][1]):
        assert np.array_equal(g, fast[1][name])
    assert "gradcheck:" in out.getvalue()


def test_a_planted_kernel_bug_is_caught_and_shrunk_to_a_short_reproducer(monkeypatch):
    """tanh's numba backward made wrong by one part in 10^12: the fuzzer must notice, and the
    program it prints must be short and still show the bug."""
    from tinygrad_rnn.kernels import elementwise

    good = elementwise.tanh_backward

    def wrong(g, y, out=None):  # `out`: the fused step's fallback writes d_pre into its row
        d = good(g, y, out)
        d *= 1 + 1e-12
        return d
    monkeypatch.setattr(elementwise, "tanh_backward", wrong)
    kernels.set_backend("numba")

    # derandomize seeds the draws from this function's source, decorator included: with this
    # text the 30 programs find and shrink the bug in about 8 s, with the suppression list left
    # out in about 50 s (no health check fires either way)
    @settings(max_examples=30, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(program=programs(max_ops=60))
    def fuzz(program):
        note(program.source())
        ref = run(program, np.float64, "numpy")
        fast = run(program, np.float64, "numba")
        assert_agree(program, fast[1], ref[1], TOL[np.dtype(np.float64)], "float64 gradient")

    with pytest.raises(AssertionError) as failure:
        fuzz()
    notes = "\n".join(getattr(failure.value, "__notes__", []))
    body = notes[notes.index("def program("):notes.index("    return loss")].splitlines()[1:]
    assert any("tanh" in line for line in body), notes
    assert len(body) <= 6, notes  # hypothesis shrank it to a few lines
