"""`import tinygrad_rnn` stays light: kernels (and numba) load on the first op, not at import."""
import os
import shutil
import subprocess
import sys

import pytest

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


MALLOPT_SPY = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
/* logs every mallopt call of the process it is preloaded into, then makes it */
int mallopt(int param, int value) {
    FILE *log = fopen(getenv("MALLOPT_LOG"), "a");
    if (log) { fprintf(log, "%d %d\n", param, value); fclose(log); }
    int (*real)(int, int) = (int (*)(int, int))dlsym(RTLD_NEXT, "mallopt");
    return real(param, value);
}
"""


@pytest.fixture(scope="module")
def mallopt_spy(tmp_path_factory):
    """A shared library that, preloaded, logs every call to glibc's mallopt."""
    if not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None or not shutil.which("gcc"):
        pytest.skip("needs glibc and gcc")
    d = tmp_path_factory.mktemp("spy")
    (d / "spy.c").write_text(MALLOPT_SPY)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "spy.so"), str(d / "spy.c"), "-ldl"], check=True)
    return d / "spy.so"


@pytest.mark.parametrize("code,env,calls", [
    ("import tinygrad_rnn as tg; tg.Tensor([1.0], requires_grad=True).sum().backward()", {}, 0),
    ("import tinygrad_rnn as tg; print(tg.fast.retain_freed_memory())", {}, 2),
    ("import tinygrad_rnn as tg; print(tg.fast.retaining_freed_memory())", {"TINYGRAD_RNN_MALLOC": "retain"}, 2),
], ids=["import-and-backward", "opted-in", "opted-in-by-env"])
def test_the_allocator_is_left_alone_unless_asked(mallopt_spy, tmp_path, code, env, calls):
    """A library must not change its host's malloc: `import tinygrad_rnn` (and using it) makes
    no mallopt call; fast.retain_freed_memory() or TINYGRAD_RNN_MALLOC=retain make the two."""
    log = tmp_path / "mallopt.log"
    full_env = dict(os.environ, LD_PRELOAD=str(mallopt_spy), MALLOPT_LOG=str(log), **env)
    full_env.pop("TINYGRAD_RNN_MALLOC", None) if not env else None
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)
    assert res.returncode == 0, res.stderr
    logged = log.read_text().splitlines() if log.exists() else []
    assert len(logged) == calls, logged
    if calls:
        assert res.stdout.strip() == "True"
        assert sorted(logged) == ["-1 536870912", "-3 33554432"]  # trim 512 MiB, mmap 32 MiB
