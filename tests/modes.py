"""The two paths every gradient test can run on: the fast one (the default) and the plain,
textbook one (`tinygrad_rnn.fast.disabled()`: generic ops, arrays only, the engine's own
Accumulator). Plain equals fast to rounding; tests parametrize over both, minitorch-style."""
import contextlib

import pytest

import tinygrad_rnn as tg

MODES = ["fast", "plain"]


def path(fast: bool):
    """A context: the fast path (each recurrent step one fused node), or the plain one."""
    return contextlib.nullcontext() if fast else tg.fast.disabled()


@pytest.fixture(params=MODES)
def mode(request):
    """Run the test inside each path; the value is "fast" or "plain"."""
    with path(request.param == "fast"):
        yield request.param
