"""Deep (stacked) RNNs: the hidden states of one RNN layer are the inputs of the next.

`nn.RNN(V, H, num_layers=L)` runs L layers; layer l reads layer l-1's h_t at every step, and
only the last layer feeds the read-out. The same character language model (one-hot in, a
linear read-out, Adam, truncated BPTT over 64-character windows, the gradient norm clipped
at 5) is trained with 1, 2 and 3 layers of the same width and the same number of steps;
each is scored by perplexity on the held-out end of the text, with its parameter count and
time per step. A deeper stack costs proportionally more per step; whether it pays off
within a fixed, small budget is what the numbers say.

    python examples/deep_rnn.py
    python examples/deep_rnn.py --layers 1 2 4 --cell gru
    python examples/deep_rnn.py --quick

Result, default budget (first 500,000 characters of tiny-shakespeare, tanh RNN, hidden 96,
300 steps; 53 s on this 2-core machine while other jobs ran), validation perplexity
(uniform: 63): 1 layer 10.216 (21,567 parameters, 48 ms/step), 2 layers 9.692 (40,191,
50 ms/step), 3 layers 9.308 (58,815, 72 ms/step). Within one budget of steps, each layer
helped; the step times are medians and noisy on a shared machine.
"""
from __future__ import annotations

import argparse

import tinygrad_rnn as tg
from tinygrad_rnn.models.charlm import CharRNN, evaluate

from _common import char_data, count_parameters, load_text, train_lm


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", help="a UTF-8 file (default: the local tiny-shakespeare, "
                                              "else CPython's built-in docs)")
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="rnn")
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps, args.seq_len = 16, 40, 16

    name, text = load_text(args.corpus, max_chars=100_000 if args.quick else 500_000)
    vocab, train_ids, val_ids = char_data(text)
    val_ids = val_ids[:2_000 if args.quick else 30_000]
    print(f"{name} (first {len(text):,} characters), vocabulary {len(vocab)}; {args.cell}, hidden "
          f"{args.hidden}, {args.steps} steps of 32 x {args.seq_len}; validating on {len(val_ids):,} characters")
    print(f"{'layers':>6}  {'parameters':>10}  {'ms/step':>7}  {'val perplexity':>14}")
    summary = []
    for layers in args.layers:
        tg.manual_seed(args.seed)
        model = CharRNN(len(vocab), args.hidden, num_layers=layers, cell=args.cell)
        run = train_lm(model, train_ids, args.steps, seq_len=args.seq_len, seed=args.seed)
        ppl = evaluate(model, val_ids, 32, args.seq_len)["perplexity"]
        print(f"{layers:6d}  {count_parameters(model):10,d}  {run['seconds_per_step'] * 1e3:7.0f}  {ppl:14.3f}")
        summary.append(f"layers{layers}_ppl={ppl:.3f}")
    print("result: " + " ".join(summary) + f" uniform_ppl={len(vocab)}")


if __name__ == "__main__":
    main()
