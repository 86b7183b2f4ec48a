"""Neural-network building blocks. `nn.functional` holds the stateless ops."""
from . import functional  # noqa: F401
