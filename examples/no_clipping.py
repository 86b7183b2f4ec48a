"""d2l's exercises on the RNN from scratch: train without gradient clipping, and with ReLU
instead of tanh. What happens to the perplexity, the gradient norms and the time?

The setting is d2l's: a character RNN (one-hot in, `nn.RNN`, linear read-out) trained by
plain SGD with learning rate 1 on sequential 35-character windows, the state carried and
detached between batches, and the global gradient norm clipped at 1 (Pascanu et al.'s rescaling,
`nn.utils.clip_grad_norm_`). Four runs from the same initial weights and the same batches:
tanh or ReLU, clipped or not. A run whose loss becomes NaN/Inf stops there.

Clipping bounds the size of every update. Without it, the rare batch whose gradient
explodes (the product of many Jacobians through time) throws the weights far away; with
ReLU, whose activations are unbounded, the hidden state itself can grow step after step.

    python examples/no_clipping.py                  # ../shared/data/timemachine.txt when present
    python examples/no_clipping.py --quick

Result, default budget (timemachine.txt, hidden 128, 300 steps; 67 s in one run and 291 s
in another on this 2-core machine, depending on the other jobs), validation perplexity
(uniform: 70):

    tanh, clipped at 1    10.30   max gradient norm 2.56
    tanh, not clipped     1.4e16  max gradient norm 34.1, median 8: the weights blew up
    ReLU, clipped at 1    10.57   max gradient norm 3.5e6, tamed by the clipping
    ReLU, not clipped     NaN     the loss was no longer finite at step 6

(Measured on an AMD Zen 3 in December 2026; the machine first measured gave 10.53, 2e14 and
10.46: its BLAS summed in another order.) The unclipped tanh perplexity is chaotic: any
change in float rounding moves it by orders of magnitude (an earlier build of the framework
gave 3e10), never back to a sane value.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.models.charlm import evaluate
from tinygrad_rnn.nn import functional as F

from _common import char_data, load_text, local_text_path, train_lm


class CharLM(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, nonlinearity: str):
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = nn.RNN(vocab_size, hidden, nonlinearity=nonlinearity, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens, state=None):
        out, state = self.rnn(F.one_hot(np.asarray(tokens), self.vocab_size), state)
        return self.head(out), state


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", help="a UTF-8 file (default: the local timemachine.txt, "
                                              "else the local tiny-shakespeare, else CPython's docs)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps = 32, 15

    name, text = load_text(args.corpus or local_text_path("timemachine.txt"),
                           max_chars=50_000 if args.quick else None)
    vocab, train_ids, val_ids = char_data(text)
    print(f"{name}: {len(text):,} characters, vocabulary {len(vocab)}; hidden {args.hidden}, "
          f"SGD lr {args.lr:g}, {args.steps} steps of 32 x 35")
    print(f"{'activation':>10}  {'clip':>5}  {'val perplexity':>14}  {'max grad norm':>13}  "
          f"{'median grad norm':>16}  {'ms/step':>7}  diverged")
    summary = []
    for act in ("tanh", "relu"):
        for clip in (args.clip, None):
            tg.manual_seed(args.seed)
            model = CharLM(len(vocab), args.hidden, act)
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is the point of the unclipped runs
                run = train_lm(model, train_ids, args.steps, seq_len=35, lr=args.lr, clip=clip,
                               seed=args.seed, optimizer="sgd")
            finite = all(np.isfinite(p.data).all() for p in model.parameters())
            ppl = evaluate(model, val_ids, 32, 35)["perplexity"] if finite and run["diverged_at"] is None else math.nan
            norms = np.asarray(run["norms"])
            diverged = f"at step {run['diverged_at']}" if run["diverged_at"] else "no"
            shown = f"{ppl:14.3f}" if not ppl > 1e4 else f"{ppl:14.3g}"
            print(f"{act:>10}  {clip if clip else 'none':>5}  {shown}  {np.nanmax(norms):13.3g}  "
                  f"{np.nanmedian(norms):16.3g}  {run['seconds_per_step'] * 1e3:7.1f}  {diverged}")
            tag = f"{act}_{'clip' if clip else 'noclip'}"
            summary.append(f"{tag}_ppl={ppl:.4g} {tag}_max_norm={np.nanmax(norms):.3g}")
    print("result: " + " ".join(summary) + f" uniform_ppl={len(vocab)}")


if __name__ == "__main__":
    main()
