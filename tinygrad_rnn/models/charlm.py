"""The character-level RNN language model: a recurrent layer over one-hot (or embedded)
tokens, a linear read-out, next-token cross-entropy, and its perplexity on a text.

BPTT is not written anywhere: `nn.RNN`/`nn.LSTM`/`nn.GRU` loop a cell over time and
`loss.backward()` walks the graph that loop recorded.

The rest of the char-LM lives beside this file, one job each: `sampling.py` (ancestral
sampling, beam search), `config.py` (TrainConfig and its checks), `run_files.py` (the
checkpoint format, resume checks, the lock on --out), `signals.py` (Ctrl-C and SIGTERM) and
`training.py` (the loop). Their public names are importable from here too, so
`from tinygrad_rnn.models import charlm; charlm.train(...)` is the one place to start.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..nn import functional as F
from ..tensor import Tensor

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(nn.Module):
    """tokens (B, T) -> logits (B, T, V), carrying the recurrent state.

    `embedding=0` feeds one-hot vectors, as min-char-rnn and d2l do, given to the recurrent
    layer as the token ids they stand for (it gathers columns of W_ih instead of multiplying by
    the one-hot rows: the same numbers, nn/rnn.py); `embedding=E` learns an E-dimensional
    embedding instead."""

    def __init__(self, vocab_size: int, hidden_size: int = 256, num_layers: int = 1, cell: str = "rnn",
                 embedding: int = 0, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.vocab_size, self.cell = vocab_size, cell
        self.embed = nn.Embedding(vocab_size, embedding) if embedding else None
        self.rnn = CELLS[cell](embedding or vocab_size, hidden_size, num_layers,
                               dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None):
        tokens = np.asarray(tokens.data if isinstance(tokens, Tensor) else tokens)
        out, state = self.rnn(self._input(tokens), state)
        return self.head(self.drop(out)), state

    def _input(self, tokens: np.ndarray):
        """The recurrent layer's input: embeddings, or the ids standing for one-hot rows (the
        layer's step checks them against its input size, the vocabulary)."""
        return tokens if self.embed is None else self.embed(tokens)


def _perplexity(nats: float) -> float:
    """exp(nats), or inf where that overflows: a diverged model's loss passes 709.8 nats a token."""
    try:
        return math.exp(nats)
    except OverflowError:
        return math.inf


def detach_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def _state_arrays(state) -> dict:
    if state is None:
        return {}
    parts = state if isinstance(state, tuple) else (state,)
    return {f"state.{i}": s.data for i, s in enumerate(parts)}


def _state_from_arrays(arrays: dict, cell: str):
    parts = [Tensor(arrays[k]) for k in sorted(k for k in arrays if k.startswith("state."))]
    if not parts:
        return None
    return tuple(parts) if cell == "lstm" else parts[0]


# ----------------------------------------------------------------------------- evaluation
@no_grad()
def evaluate(model: CharRNN, ids: np.ndarray, batch_size: int = 32, seq_len: int = 64) -> dict:
    """Mean next-token negative log-likelihood over `ids`: nats, bits and perplexity per token.

    The text is cut into `batch_size` parallel streams read left to right with the state
    carried, so every prediction after the first of a stream has its full left context."""
    was_training = model.training
    model.eval()
    B = max(1, min(batch_size, (len(ids) - 1) // max(seq_len, 1)))
    n = (len(ids) - 1) // B
    if n < 1:
        raise ValueError(f"evaluation text of {len(ids)} tokens is too short")
    xs = ids[: n * B].reshape(B, n)
    ys = ids[1: n * B + 1].reshape(B, n)
    total, count, state = 0.0, 0, None
    for start in range(0, n, seq_len):
        x, y = xs[:, start:start + seq_len], ys[:, start:start + seq_len]
        logits, state = model(x, state)
        total += float(F.cross_entropy(logits.reshape(-1, model.vocab_size), y.reshape(-1), reduction="sum").item())
        count += y.size
    model.train(was_training)
    nats = total / count
    return {"nats": nats, "bits": nats / math.log(2), "perplexity": _perplexity(nats), "tokens": count,
            "uniform_perplexity": model.vocab_size}


# The public names of the char-LM's other files, re-exported last: they import this file's
# model, which must be defined by then.
from .config import TrainConfig, check_config, make_optimizer  # noqa: F401,E402
from .run_files import load_model, save_checkpoint  # noqa: F401,E402
from .sampling import beam_search, sample  # noqa: F401,E402
from .signals import TrainingInterrupted  # noqa: F401,E402
from .training import _THREAD_VARIABLES, TrainingDiverged, blas_threads_for, train  # noqa: F401,E402
