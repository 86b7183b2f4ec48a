"""A character-level RNN language model written from raw tensor ops (d2l's "RNN from scratch").

No layers, no optimizer class: three weight matrices, a Python loop over time steps, and
`loss.backward()`. Backpropagation through time is not written anywhere; it emerges from the
graph the loop records. Hidden state is carried across batches and detached (truncated BPTT).

    python examples/rnn_from_scratch.py                 # built-in corpus, a minute or more
    python examples/rnn_from_scratch.py --corpus ../shared/data/tinyshakespeare.txt
    python examples/rnn_from_scratch.py --quick         # a few seconds: the smoke test

Result, default budget (built-in corpus, 103 symbols, hidden 128, 1,500 steps of 32 x 32):
smoothed training perplexity 6.007 (uniform: 103) on CPython 3.11.7, whose documentation text
is the built-in corpus (an earlier run on another CPython's text gave 5.41); 84 s in one run
and 183 s in another on this 2-core machine, depending on the other jobs on it.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn.nn import functional as F


def builtin_corpus() -> str:
    """CPython's own documentation text (pydoc_data ships with every CPython): real English
    prose that is always present, so this runs offline on a fresh machine."""
    import pydoc_data.topics

    return "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))


def batches(ids: np.ndarray, batch_size: int, seq_len: int):
    """Sequential partitioning: B parallel streams, consecutive windows, so the hidden state
    of one batch is the right starting state for the next."""
    n = (len(ids) - 1) // batch_size
    xs = ids[: n * batch_size].reshape(batch_size, n)
    ys = ids[1: n * batch_size + 1].reshape(batch_size, n)
    while True:
        for start in range(0, n - seq_len + 1, seq_len):
            yield xs[:, start:start + seq_len], ys[:, start:start + seq_len]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="UTF-8 text file (default: CPython's built-in docs)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=5.0, help="clip the global gradient norm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps = 32, 30

    text = open(args.corpus, encoding="utf-8").read() if args.corpus else builtin_corpus()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text], dtype=np.int64)
    V, H = len(chars), args.hidden
    print(f"corpus: {len(text):,} chars, vocabulary {V}, hidden {H}")

    tg.manual_seed(args.seed)
    scale = 1 / math.sqrt(H)
    W_xh = (tg.randn(V, H) * 0.01).requires_grad_()
    W_hh = (tg.randn(H, H) * scale).requires_grad_()
    b_h = tg.zeros(H, requires_grad=True)
    W_hq = (tg.randn(H, V) * scale).requires_grad_()
    b_q = tg.zeros(V, requires_grad=True)
    params = [W_xh, W_hh, b_h, W_hq, b_q]
    mem = [np.zeros_like(p.data) for p in params]  # Adagrad, as min-char-rnn

    def step(x_ids, h):
        # a one-hot input times W_xh is a row gather: embedding() is the same math, cheaper
        return (F.embedding(x_ids, W_xh) + h @ W_hh + b_h).tanh()

    h = tg.zeros(args.batch_size, H)
    data = batches(ids, args.batch_size, args.seq_len)
    t0, smooth = time.perf_counter(), math.log(V)
    for it in range(1, args.steps + 1):
        x, y = next(data)
        h = h.detach()  # truncated BPTT: keep the state, cut the graph
        logits = []
        for t in range(args.seq_len):
            h = step(x[:, t], h)
            logits.append(h @ W_hq + b_q)
        loss = F.cross_entropy(tg.stack(logits, 1).reshape(-1, V), y.reshape(-1))
        for p in params:
            p.grad = None
        loss.backward()
        norm = math.sqrt(sum(float((p.grad.data ** 2).sum()) for p in params))
        shrink = min(1.0, args.clip / (norm + 1e-6))
        for p, m in zip(params, mem):
            g = p.grad.data * shrink
            m += g * g
            p.data -= args.lr * g / np.sqrt(m + 1e-8)
        smooth = 0.95 * smooth + 0.05 * loss.item()
        if it % 100 == 0 or it == args.steps:
            tok_s = it * args.batch_size * args.seq_len / (time.perf_counter() - t0)
            print(f"step {it:5d}  loss {smooth:.3f}  perplexity {math.exp(smooth):7.2f}  "
                  f"grad norm {norm:6.2f}  {tok_s:,.0f} tokens/s")

    # ancestral sampling from the trained model, primed with a newline
    rng = np.random.default_rng(args.seed)
    out, h = [], tg.zeros(1, H)
    c = index.get("\n", 0)
    with tg.no_grad():
        for _ in range(300):
            h = step(np.array([c]), h)
            p = (h @ W_hq + b_q).softmax(-1).data[0].astype(np.float64)
            c = int(rng.choice(V, p=p / p.sum()))
            out.append(chars[c])
    print("sample:\n" + "".join(out))
    print(f"result: train_perplexity={math.exp(smooth):.3f} uniform_perplexity={V} steps={args.steps}")
    return smooth


if __name__ == "__main__":
    main()
