"""Text from a trained CharRNN: ancestral sampling (temperature, top-k) and beam search."""
from __future__ import annotations

import math

import numpy as np

from ..autograd import no_grad
from ..text import Vocab
from .charlm import CharRNN


# Beam search calls the model once per kept candidate per step: past a thousand the wait is
# minutes per token, and widths past a few dozen change the result little.
MAX_BEAM = 1000


def default_prime(vocab: Vocab) -> str:
    """A prime every vocabulary can encode: a newline (the start of a line) when the text had
    one, else a space, else the first token. A word vocabulary has no newline token; its text
    starts after a full stop when it knows one."""
    if vocab.level == "word":
        return "." if "." in vocab.index else vocab.tokens[-1]
    for c in ("\n", " "):
        if c in vocab.index:
            return c
    return vocab.tokens[0]


def join_text(vocab: Vocab, prime: str, continuation: str) -> str:
    """`prime` followed by a sampled `continuation`, with a space between them at word level
    (decode() puts one between words, so gluing them would make `romeo:deeds` of two words)."""
    if vocab.level == "word" and prime and continuation and not prime[-1].isspace():
        return prime + " " + continuation
    return prime + continuation


def _prime_ids(vocab: Vocab, prime: str | None) -> np.ndarray:
    """The token ids of `prime`, or of the default prime when it is None or holds no token
    (an empty string, or only spaces at word level)."""
    ids = vocab.encode(prime) if prime else np.zeros(0, np.int64)
    return ids if len(ids) else vocab.encode(default_prime(vocab))


def _check_length(length, op: str) -> None:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"{op}: length must be a whole number >= 0, got {length!r}")


def _next_distribution(logits_row: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    z = logits_row.astype(np.float64) / temperature
    if top_k is not None and 0 < top_k < len(z):
        cutoff = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cutoff, z, -np.inf)
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


@no_grad()
def sample(model: CharRNN, vocab: Vocab, prime: str | None = None, length: int = 200, temperature: float = 1.0,
           top_k: int | None = None, seed: int | None = None) -> str:
    """Ancestral sampling after warming the state up on `prime` (None or a prime without a
    token: `default_prime(vocab)`); temperature 0 is greedy; `top_k` None or 0 keeps every token."""
    _check_length(length, "sample")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        # a negative temperature turns the distribution upside down: the least likely tokens first
        raise ValueError(f"sample: temperature must be a finite number >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0):
        raise ValueError(f"sample: top_k must be a whole number >= 0 (0 or None: every token), got {top_k!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"sample: seed must be None or a whole number >= 0, got {seed!r}")
    was_training = model.training
    model.eval()
    gen = np.random.default_rng(seed)
    logits, state = model(_prime_ids(vocab, prime)[None, :], None)
    last = logits.data[0, -1]
    out = []
    for _ in range(length):
        if temperature == 0:
            token = int(np.argmax(last))
        else:
            token = int(gen.choice(len(last), p=_next_distribution(last, temperature, top_k)))
        out.append(token)
        logits, state = model(np.array([[token]]), state)
        last = logits.data[0, -1]
    model.train(was_training)
    return vocab.decode(np.array(out, dtype=np.int64))


@no_grad()
def beam_search(model: CharRNN, vocab: Vocab, prime: str, length: int, beam: int = 5) -> str:
    """The continuation of `length` tokens with the best length-normalised log-probability
    (sum of log-probs / number of generated tokens), keeping `beam` candidates per step
    (1 to MAX_BEAM). An empty `prime` starts from `default_prime(vocab)`, as in sample()."""
    _check_length(length, "beam_search")
    if isinstance(beam, bool) or not isinstance(beam, (int, np.integer)) or not 1 <= beam <= MAX_BEAM:
        raise ValueError(f"beam_search: beam width must be a whole number from 1 to {MAX_BEAM}, got {beam!r}")
    was_training = model.training
    model.eval()
    logits, state = model(_prime_ids(vocab, prime)[None, :], None)
    beams = [(0.0, [], state, logits.data[0, -1])]
    for _ in range(length):
        candidates = []
        for score, toks, st, last in beams:
            logp = last.astype(np.float64) - np.logaddexp.reduce(last.astype(np.float64))
            for tok in np.argsort(-logp)[:beam]:
                candidates.append((score + logp[tok], toks + [int(tok)], st))
        candidates.sort(key=lambda c: -c[0] / len(c[1]))
        beams = []
        for score, toks, st in candidates[:beam]:
            logits, new_state = model(np.array([[toks[-1]]]), st)
            beams.append((score, toks, new_state, logits.data[0, -1]))
    model.train(was_training)
    best = max(beams, key=lambda b: b[0] / max(1, len(b[1])))
    return vocab.decode(np.array(best[1], dtype=np.int64))
