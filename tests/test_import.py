"""`import tinygrad_rnn` stays light: kernels (and numba) load on the first op, not at import."""
import os
import subprocess
import sys

PROBE = """
import sys
import tinygrad_rnn
print(sorted(m for m in sys.modules if m == "numba" or m.startswith("numba.")))
x = tinygrad_rnn.Tensor([[0.5, -1.0]], requires_grad=True)
x.sigmoid().sum().backward()  # runs numba kernels (sigmoid and its backward)
print("numba" in sys.modules)
"""


def test_import_does_not_load_numba_until_the_first_op():
    # a fresh interpreter: this test process has long since imported everything
    env = dict(os.environ, TINYGRAD_RNN_BACKEND="numba")
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    eager, after_op = res.stdout.splitlines()
    assert eager == "[]", f"`import tinygrad_rnn` imported numba eagerly: {eager}"
    assert after_op == "True", "the first op did not load the numba kernels"


def test_malloc_tuning_is_applied_on_glibc_and_can_be_refused():
    # tinygrad_rnn/_malloc.py: freed arrays stay in malloc for the next step, unless told not to
    probe = "import tinygrad_rnn; print(tinygrad_rnn._malloc.RETAINING)"
    env = dict(os.environ)
    env.pop("TINYGRAD_RNN_MALLOC", None)
    default = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    refused = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env=dict(env, TINYGRAD_RNN_MALLOC="system"))
    assert default.returncode == 0 and refused.returncode == 0, default.stderr + refused.stderr
    glibc = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None
    assert default.stdout.strip() == str(glibc)
    assert refused.stdout.strip() == "False"
