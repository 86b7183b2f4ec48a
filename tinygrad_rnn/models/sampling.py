"""Text from a trained CharRNN: ancestral sampling (temperature, top-k) and beam search."""
from __future__ import annotations

import numpy as np

from ..autograd import no_grad
from ..text import Vocab
from .charlm import CharRNN


def _next_distribution(logits_row: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    z = logits_row.astype(np.float64) / temperature
    if top_k is not None and 0 < top_k < len(z):
        cutoff = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cutoff, z, -np.inf)
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


@no_grad()
def sample(model: CharRNN, vocab: Vocab, prime: str = "\n", length: int = 200, temperature: float = 1.0,
           top_k: int | None = None, seed: int | None = None) -> str:
    """Ancestral sampling after warming the state up on `prime`; temperature 0 is greedy."""
    was_training = model.training
    model.eval()
    gen = np.random.default_rng(seed)
    prime_ids = vocab.encode(prime) if prime else np.array([0], dtype=np.int64)
    logits, state = model(prime_ids[None, :], None)
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
    (sum of log-probs / number of generated tokens), keeping `beam` candidates per step."""
    was_training = model.training
    model.eval()
    logits, state = model(vocab.encode(prime)[None, :], None)
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
