"""Train a character-level RNN language model on Shakespeare, report perplexity, and sample.

The model is `tinygrad_rnn.models.charlm.CharRNN`: one-hot characters into an `nn.RNN`, a
linear read-out to next-character logits. The training loop is written out here: sequential
batches with the hidden state carried from one batch to the next and detached (truncated
BPTT), Adam, the gradient norm clipped at 5. Perplexity is exp(mean next-character
negative log-likelihood) on the last 10% of the text, which the model never trains on;
guessing uniformly over the V characters scores exactly V.

    python examples/char_rnn.py                      # ../shared/data/tinyshakespeare.txt if present
    python examples/char_rnn.py shakespeare          # download tiny-shakespeare once (cached)
    python examples/char_rnn.py path/to/text.txt --steps 3000 --hidden 512
    python examples/char_rnn.py --quick              # a few seconds: the smoke test

Result, default budget (tiny-shakespeare, hidden 128, 800 steps of 32 x 64 characters):
validation perplexity 7.21 (uniform guessing: 65); training took 69 s (23,900 tokens/s) in
one run and 372 s in another on this 2-core machine, depending on what the other jobs on it
were doing. A sample at temperature 0.8:

    MENCUTIS:
    Tay shing I sobly: on grients of her server harif leat should, wherst the klow tor woull,
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.models.charlm import CharRNN, detach_state, evaluate, sample
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.text import BatchStream

from _common import char_data, load_text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", help="a UTF-8 file or 'shakespeare' (default: the local "
                                              "tiny-shakespeare, else CPython's built-in docs)")
    ap.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="rnn")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps, args.seq_len = 64, 40, 32

    name, text = load_text(args.corpus, max_chars=200_000 if args.quick else None)
    vocab, train_ids, val_ids = char_data(text)
    print(f"{name}: {len(text):,} characters, vocabulary {len(vocab)}; "
          f"training on {len(train_ids):,}, validating on {len(val_ids):,}")

    tg.manual_seed(args.seed)
    model = CharRNN(len(vocab), args.hidden, cell=args.cell)
    opt = tg.optim.Adam(model.parameters(), lr=args.lr)
    stream = BatchStream(train_ids, args.batch_size, args.seq_len, "sequential", args.seed)

    state, t0, recent = None, time.perf_counter(), []
    for step, (epoch, index, x, y) in zip(range(1, args.steps + 1), stream):
        if index == 0:
            state = None  # each epoch starts at a new offset, so the old state no longer fits
        logits, state = model(x, detach_state(state))  # detach: truncated BPTT
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        recent.append(loss.item())
        if step % 100 == 0 or step == args.steps:
            print(f"step {step:5d}  train perplexity {math.exp(np.mean(recent)):7.2f}")
            recent = []
    seconds = time.perf_counter() - t0
    tokens_per_s = args.steps * args.batch_size * args.seq_len / seconds

    val = evaluate(model, val_ids, args.batch_size, args.seq_len)
    print(f"validation: {val['nats']:.3f} nats/char, {val['bits']:.3f} bits/char, "
          f"perplexity {val['perplexity']:.2f} (uniform guessing: {len(vocab)})")
    print("sample (temperature 0.8):\n" + sample(model, vocab, "\n", 300, temperature=0.8, seed=args.seed))
    print(f"result: val_perplexity={val['perplexity']:.3f} uniform_perplexity={len(vocab)} "
          f"train_seconds={seconds:.1f} tokens_per_s={tokens_per_s:.0f}")
    return val["perplexity"]


if __name__ == "__main__":
    main()
