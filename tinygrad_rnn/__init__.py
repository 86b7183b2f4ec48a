"""tinygrad_rnn: a small, fast, honest reverse-mode autograd framework for recurrent nets.

Where to look first: `tensor.py` (the Tensor), `autograd.py` (Function and the backward walk),
`ops/` (each op's forward and backward side by side), `kernels/` (numba kernels with a numpy
reference beside each).
"""
from . import _malloc  # noqa: F401  (freed arrays stay in malloc for reuse; see _malloc.py)
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
from . import nn, optim  # noqa: F401
from . import debug  # noqa: F401  (TINYGRAD_RNN_DEBUG=1 profiles the process from here on)

__version__ = "0.1.0"
