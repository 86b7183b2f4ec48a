"""`tinygrad-rnn train`'s char-LM run written in PyTorch, to compare whole training runs.

    python benchmarks/train_torch.py --corpus shakespeare --cell lstm --steps 2000
    tinygrad-rnn train --corpus shakespeare --cell lstm --steps 2000 --json   # the run it mirrors

Everything but the framework is the CLI's: the corpus, vocabulary, train/validation split and
batches come from tinygrad_rnn.text; the model is the CLI's CharRNN shape (one-hot input, or an
embedding with --embedding, then nn.LSTM / nn.GRU / nn.RNN and a Linear head, dropout between
layers); Adam with gradient-norm clipping; the state carried from one window to the next and
reset at each epoch's start (sequential sampling); validation as `charlm.evaluate` measures it
(the split read as `batch_size` streams, the state carried). Weights start from PyTorch's own
initialisation (the same distributions as ours, other draws), so losses agree to noise, not bits.

tokens/s counts the training steps alone, as the CLI's does. `--threads` defaults to what
the CLI uses at this hidden size: one BLAS thread below hidden 512 (models/training.py
blas_threads_for), else the machine's.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="shakespeare")
    ap.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--embedding", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--clip-norm", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch threads (default: 1 below --hidden 512, else all)")
    args = ap.parse_args()

    import torch
    from tinygrad_rnn.text import BatchStream, Vocab, load_corpus, split

    threads = args.threads or (1 if args.hidden < 512 else os.cpu_count())
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    text = load_corpus(args.corpus)
    vocab = Vocab.from_text(text, "char", None)
    train_ids, val_ids, _ = split(vocab.encode(text), args.val_frac)
    stream = BatchStream(train_ids, args.batch_size, args.seq_len, "sequential", args.seed)
    V = len(vocab)

    class CharRNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(V, args.embedding) if args.embedding else None
            kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[args.cell]
            self.rnn = kind(args.embedding or V, args.hidden, args.layers, batch_first=True,
                            dropout=args.dropout if args.layers > 1 else 0.0)
            self.head = torch.nn.Linear(args.hidden, V)

        def forward(self, x, state):
            inp = self.embed(x) if self.embed is not None else torch.nn.functional.one_hot(x, V).float()
            out, state = self.rnn(inp, state)
            return self.head(out), state

    model = CharRNN()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    def detach(state):
        return None if state is None else tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()

    @torch.no_grad()
    def evaluate():
        model.eval()
        B = max(1, min(args.batch_size, (len(val_ids) - 1) // args.seq_len))
        n = (len(val_ids) - 1) // B
        xs = torch.from_numpy(val_ids[:n * B].reshape(B, n).astype(np.int64))
        ys = torch.from_numpy(val_ids[1:n * B + 1].reshape(B, n).astype(np.int64))
        total, count, state = 0.0, 0, None
        for start in range(0, n, args.seq_len):
            x, y = xs[:, start:start + args.seq_len], ys[:, start:start + args.seq_len]
            logits, state = model(x, state)
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum"))
            count += y.numel()
        model.train()
        return total / count

    state, epoch, index, train_time, history = None, 0, 0, 0.0, []
    t_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        x, y = (torch.from_numpy(a.astype(np.int64)) for a in stream.batch(epoch, index))
        if index == 0:
            state = None
        logits, new_state = model(x, detach(state))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)
        opt.step()
        state = new_state
        index += 1
        if index == stream.batches_per_epoch:
            epoch, index = epoch + 1, 0
        train_time += time.perf_counter() - t0
        if step % args.eval_every == 0 or step == args.steps:
            val = evaluate()
            history.append({"step": step, "val_nats": val})
            print(f"step {step}: val {val:.4f} nats/char ({math.exp(val):.3f} perplexity), "
                  f"{step * args.batch_size * args.seq_len / train_time:,.0f} tokens/s", flush=True)
    print(json.dumps({"framework": f"torch {torch.__version__}", "threads": threads, "val_nats": history[-1]["val_nats"],
                      "tokens_per_s": args.steps * args.batch_size * args.seq_len / train_time,
                      "wall_s": time.perf_counter() - t_start, "history": history}))


if __name__ == "__main__":
    main()
