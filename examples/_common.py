"""Helpers several examples share: where to find text, and one plain language-model training
loop. Not an example itself (the leading underscore keeps tests/test_examples.py from running it).
"""
from __future__ import annotations

import math
import pathlib
import time

import numpy as np

from tinygrad_rnn import nn
from tinygrad_rnn.models import charlm
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.text import BatchStream, Vocab, load_corpus, split

REPO = pathlib.Path(__file__).resolve().parent.parent
# the shared data folder sits beside the repository in this project's checkouts and in CI
SHARED_DATA = REPO.parent / "shared" / "data"


def local_text_path(name: str = "tinyshakespeare.txt") -> str | None:
    """`../shared/data/<name>` next to the repository when present, else None."""
    path = SHARED_DATA / name
    return str(path) if path.is_file() else None


def load_text(corpus: str | None, max_chars: int | None = None) -> tuple[str, str]:
    """(description, text). `corpus` is a path or a corpus name ('shakespeare' downloads once);
    None means the local tiny-shakespeare when present, else CPython's built-in docs (offline)."""
    corpus = corpus or local_text_path()
    text = load_corpus(corpus)
    if max_chars is not None:
        text = text[:max_chars]
    return (pathlib.Path(corpus).name if corpus else "built-in CPython docs"), text


def char_data(text: str, val_frac: float = 0.1):
    """(vocab, train ids, validation ids): the validation split is the last `val_frac` of the text."""
    vocab = Vocab.from_text(text)
    train_ids, val_ids, _ = split(vocab.encode(text), val_frac)
    return vocab, train_ids, val_ids


def train_lm(model, train_ids, steps: int, batch_size: int = 32, seq_len: int = 64, lr: float = 2e-3,
             clip: float | None = 5.0, seed: int = 0, optimizer: str = "adam") -> dict:
    """Sequential batches with the state carried and detached (truncated BPTT), the gradient
    norm clipped at `clip` (None: not clipped), the recipe of `tinygrad-rnn train`.
    `model(x, state) -> (logits, state)`. Stops early if the loss stops being finite.

    Returns the losses, gradient norms, `diverged_at` (the step whose loss was NaN/Inf, or
    None) and the median wall-clock seconds per step (the median shrugs off the first step's
    kernel compilation and some of the noise of other jobs on the machine)."""
    stream = BatchStream(train_ids, batch_size, seq_len, "sequential", seed)
    opt = charlm.make_optimizer(optimizer, model.parameters(), lr)
    vocab_size = model.vocab_size
    losses, norms, times, state, diverged_at = [], [], [], None, None
    for step, (epoch, index, x, y) in zip(range(1, steps + 1), stream):
        t0 = time.perf_counter()
        if index == 0:
            state = None  # a new epoch starts at a new offset: the carried state no longer fits
        logits, state = model(x, charlm.detach_state(state))
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1))
        if not math.isfinite(loss.item()):
            diverged_at = step
            break
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), clip if clip else math.inf).item()
        opt.step()
        losses.append(loss.item())
        norms.append(norm)
        times.append(time.perf_counter() - t0)
    return {"losses": losses, "norms": norms, "diverged_at": diverged_at,
            "seconds_per_step": float(np.median(times)) if times else 0.0}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
