"""Neural-network building blocks with PyTorch's names: modules, layers, recurrent cells and
sequence layers, losses, initialisers. `nn.functional` holds the stateless ops."""
from . import functional  # noqa: F401
from . import init, utils  # noqa: F401
from .layers import Dropout, Embedding, Linear  # noqa: F401
from .losses import CrossEntropyLoss, MSELoss, NLLLoss  # noqa: F401
from .module import Module, ModuleList, Parameter  # noqa: F401
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: F401
