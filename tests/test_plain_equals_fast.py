"""The plain path is an oracle for the fast one: every float64 program of the golden set
(tests/golden/cases.py: charlm steps on token ids, one-hot rows and an embedding, LSTM and GRU
models, layers and cells, 2-layer bidirectional layers, loops longer than a block, and the 200
stored fuzz programs) computes the same losses, outputs, gradients and updated parameters with
`tinygrad_rnn.fast.disabled()` as with the fast path, to 1e-13 relative.

The two paths add the same terms in different orders (one GEMM over all time steps against one
product per step, a fused step against the op-by-op graph), so they agree to rounding, not to
the bit: |plain - fast| <= RTOL * max|fast| for every array.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from golden import cases
from test_golden import FAMILIES, programs

# issue 26 asks for 1e-12; the largest seen is 2.9e-15 (edges; 2.0e-15 charlm), so 1e-13 is the
# bound (34x): a wrong share would be wrong in the leading digits
RTOL = 1e-13


def float64_cases(family: str) -> dict:
    return {name: run for name, run in cases.families(programs())[family].items() if name.endswith("float64")}


def relative_error(plain: np.ndarray, fast: np.ndarray) -> float:
    scale = np.abs(fast).max() if fast.size else 0.0
    return float(np.abs(plain - fast).max() / scale) if scale else float(np.abs(plain - fast).max(initial=0.0))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_plain_path_computes_what_the_fast_one_does(family):
    problems, worst = [], 0.0
    for case, run in float64_cases(family).items():
        fast = run()
        with tg.fast.disabled():
            plain = run()
        assert sorted(plain) == sorted(fast), f"{case}: the arrays differ in name"
        for name, want in fast.items():
            got = plain[name]
            assert got.dtype == want.dtype and got.shape == want.shape, f"{case}/{name}"
            if got.dtype.kind != "f":
                assert np.array_equal(got, want), f"{case}/{name}"
                continue
            err = relative_error(got, want)
            worst = max(worst, err)
            if not err <= RTOL:
                problems.append(f"{case}/{name}: relative error {err:.3g}")
    assert not problems, "\n".join(problems[:40])
    print(f"{family}: largest relative error {worst:.3g}")


def test_the_switch_restores_what_was_on():
    assert tg.fast.enabled()
    with tg.fast.disabled():
        assert not tg.fast.enabled()
        with tg.fast.disabled():
            assert not tg.fast.enabled()
        assert not tg.fast.enabled()
    assert tg.fast.enabled()
    tg.fast.disable()
    try:
        assert not tg.fast.enabled()
    finally:
        tg.fast.enable()
    assert tg.fast.enabled()


def test_the_environment_variable_starts_the_process_on_the_plain_path():
    code = ("import numpy as np, tinygrad_rnn as tg; from tinygrad_rnn import nn;"
            "cell = nn.RNNCell(3, 4); h = cell(np.array([0, 2]));"
            "h.sum().backward(); print(tg.fast.enabled(), type(h.grad_fn).__name__)")
    for value, want in (("0", "False Tanh"), ("1", "True RNNCellStep")):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, TINYGRAD_RNN_FAST=value))
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == want
