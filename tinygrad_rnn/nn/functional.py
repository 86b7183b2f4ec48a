"""PyTorch-style `nn.functional`: the stateless neural-network ops."""
from ..functional import (  # noqa: F401
    cross_entropy,
    dropout,
    embedding,
    log_softmax,
    one_hot,
    relu,
    sigmoid,
    softmax,
    tanh,
)
