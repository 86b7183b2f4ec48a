"""tinygrad_rnn: a small, fast, honest reverse-mode autograd framework for recurrent nets.

Where to look first: `tensor.py` (the Tensor), `autograd.py` (Function and the backward walk),
`ops/` (each op's forward and backward side by side), `kernels/` (numba kernels with a numpy
reference beside each). `fast/` holds everything that buys speed without changing a value;
`tinygrad_rnn.fast.disabled()` gives the textbook path.
"""
from .tensor import RemovableHandle, Tensor, float32, float64, int64  # noqa: F401  (first: it pulls in autograd and the ops)
from .factories import (  # noqa: F401
    arange,
    eye,
    full,
    ones,
    ones_like,
    rand,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from .autograd import (  # noqa: F401
    AnomalyError,
    Function,
    ShapeError,
    detect_anomaly,
    enable_grad,
    is_anomaly_enabled,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from .functional import (  # noqa: F401
    cat,
    clamp,
    concatenate,
    exp,
    log,
    matmul,
    maximum,
    minimum,
    relu,
    sigmoid,
    softmax,
    log_softmax,
    sqrt,
    stack,
    tanh,
    where,
)
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .kernels import get_backend, set_backend  # noqa: F401
from .rng import manual_seed  # noqa: F401
from . import fast, nn, optim  # noqa: F401
from . import debug  # noqa: F401  (TINYGRAD_RNN_DEBUG=1 profiles the process from here on)

__version__ = "0.1.0"

# Submodules imported on first use (PEP 562), so `import tinygrad_rnn` stays light while
# `tinygrad_rnn.viz.to_dot(...)` works as written; op_table needs hypothesis (the test extra).
_ON_FIRST_USE = ("checkpoint", "cli", "models", "op_table", "text", "viz")


def __getattr__(name):
    if name in _ON_FIRST_USE:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))
