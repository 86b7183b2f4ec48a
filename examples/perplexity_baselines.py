"""What a perplexity means: the RNN language model next to counting baselines, on one split.

Perplexity is exp(mean negative log-likelihood per character) on text the model never saw.
A model that spreads its bets evenly over V characters scores exactly V; a perfect one, 1.
The baselines, all scored on the same validation split (the last 10% of the text):
- uniform: every character 1/V;
- unigram: each character's frequency in the training text;
- n-gram (n = 2, 3, 5): p(c | previous n-1 characters) = (count(context, c) + k) /
  (count(context) + k V), add-k smoothing so an unseen combination is not impossible. k is
  picked from {1, 0.1, 0.01, 0.001} on a development slice (the last 10% of the training
  text, counted from the rest), never on the validation text.
The RNN is `CharRNN` (one-hot in, `nn.RNN`, linear read-out) trained with Adam and truncated
BPTT for a fixed number of steps.

    python examples/perplexity_baselines.py
    python examples/perplexity_baselines.py --quick

Result, default budget (tiny-shakespeare, 1,003,855 training and 111,539 validation
characters; RNN hidden 128, 600 steps; 59 s on this 2-core machine while other jobs ran),
validation perplexity (bits/char):

    uniform            65.000 (6.022)
    unigram, add-0.001 28.426 (4.829)
    2-gram, add-0.1    11.987 (3.583)
    3-gram, add-0.1     7.735 (2.951)
    5-gram, add-0.01    5.873 (2.554)
    RNN, 600 steps      8.066 (3.012)

Within this budget the RNN lands between the 2-gram and the 3-gram, and the 5-gram, which
only counts, beats it: a short-trained RNN is no better than counting. (char_rnn.py's 800
steps reach 7.21.)
"""
from __future__ import annotations

import argparse
import math

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn.models.charlm import CharRNN, evaluate

from _common import char_data, load_text, train_lm

K_GRID = (1.0, 0.1, 0.01, 0.001)


def ngram_codes(ids: np.ndarray, n: int, V: int) -> np.ndarray:
    """One integer per window of n ids (base-V digits): code[i] encodes ids[i:i+n]."""
    code = np.zeros(len(ids) - n + 1, np.int64)
    for j in range(n):
        code = code * V + ids[j:len(ids) - n + 1 + j]
    return code


class NGram:
    """Add-k smoothed n-gram counts; n = 1 is the unigram model."""

    def __init__(self, ids: np.ndarray, n: int, V: int):
        if V ** n >= 2 ** 62:
            raise ValueError(f"NGram: {V}^{n} n-grams do not fit in int64 codes")
        self.n, self.V = n, V
        codes = ngram_codes(ids, n, V)
        self.keys, self.counts = np.unique(codes, return_counts=True)
        self.ctx_keys, self.ctx_counts = np.unique(codes // V, return_counts=True)

    @staticmethod
    def _lookup(keys, counts, queries):
        pos = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
        return np.where(keys[pos] == queries, counts[pos], 0)

    def perplexity(self, context_and_text: np.ndarray, n_scored: int, k: float) -> float:
        """Perplexity of the last `n_scored` ids of `context_and_text`, each given the n-1 ids
        before it (the ids before the scored part only serve as context)."""
        codes = ngram_codes(context_and_text, self.n, self.V)[-n_scored:]
        joint = self._lookup(self.keys, self.counts, codes)
        context = self._lookup(self.ctx_keys, self.ctx_counts, codes // self.V)
        p = (joint + k) / (context + k * self.V)
        return math.exp(-np.mean(np.log(p)))


def best_k(train_ids: np.ndarray, n: int, V: int) -> float:
    """The k of K_GRID with the lowest perplexity on the last 10% of the training ids, counted
    from the first 90%."""
    cut = int(0.9 * len(train_ids))
    model = NGram(train_ids[:cut], n, V)
    return min(K_GRID, key=lambda k: model.perplexity(train_ids, len(train_ids) - cut, k))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", help="a UTF-8 file (default: the local tiny-shakespeare, "
                                              "else CPython's built-in docs)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps = 32, 80

    name, text = load_text(args.corpus, max_chars=60_000 if args.quick else None)
    vocab, train_ids, val_ids = char_data(text)
    V = len(vocab)
    all_ids = np.concatenate([train_ids, val_ids])
    print(f"{name}: {len(text):,} characters, vocabulary {V}; training on {len(train_ids):,}, "
          f"validating on {len(val_ids):,}")
    rows = [("uniform", float(V))]
    for n in (1, 2, 3, 5):
        k = best_k(train_ids, n, V)
        ppl = NGram(train_ids, n, V).perplexity(all_ids, len(val_ids), k)
        rows.append((f"{n}-gram, add-{k:g}" if n > 1 else f"unigram, add-{k:g}", ppl))

    tg.manual_seed(args.seed)
    model = CharRNN(V, args.hidden)
    run = train_lm(model, train_ids, args.steps, seed=args.seed)
    rnn_ppl = evaluate(model, val_ids)["perplexity"]
    rows.append((f"RNN, hidden {args.hidden}, {args.steps} steps", rnn_ppl))

    print(f"{'model':<28}  {'val perplexity':>14}  {'bits/char':>9}")
    for label, ppl in rows:
        print(f"{label:<28}  {ppl:14.3f}  {math.log2(ppl):9.3f}")
    print(f"(the RNN trained for about {args.steps * run['seconds_per_step']:.0f} s: steps x median step time)")
    by_n = {label.split(",")[0]: ppl for label, ppl in rows}
    print(f"result: uniform_ppl={V} unigram_ppl={by_n['unigram']:.3f} bigram_ppl={by_n['2-gram']:.3f} "
          f"trigram_ppl={by_n['3-gram']:.3f} fivegram_ppl={by_n['5-gram']:.3f} rnn_ppl={rnn_ppl:.3f}")


if __name__ == "__main__":
    main()
