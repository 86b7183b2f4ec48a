"""Models built from the `nn` layers."""
from .charlm import CharRNN, TrainConfig, beam_search, evaluate, load_model, sample, train  # noqa: F401
