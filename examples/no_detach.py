"""d2l's exercise: what if the hidden state is not detached between sequential batches?

With sequential batches the state at the end of batch k is the right start for batch k+1.
`h = h.detach()` keeps that value but cuts the graph (truncated BPTT): each backward covers
one batch. Without it, batch k+1's graph hangs on batch k's, which hangs on batch k-1's, ...

1. Literally leaving the detach out does not run, here as in PyTorch: the first backward
   freed batch 1's graph, so batch 2's backward stops with "Trying to backward through the
   graph a second time". Keeping the graph (`retain_graph=True`) does not help either: the
   optimizer has since changed the weights that graph saved, and backward refuses stale
   values ("modified by an inplace operation").
2. What the undetached loss means is a gradient through the whole history. Computing it
   honestly means re-running every batch since the start with the current weights, so step
   k's graph covers k batches: time and memory per step grow linearly (the total
   quadratically). This runs it until a step takes longer than a bound, next to the
   detached version for the same number of steps, and compares their perplexity.

    python examples/no_detach.py
    python examples/no_detach.py --quick

Result, default budget (hidden 64, batches of 32 x 32; 34 s on this 2-core machine while
other jobs ran): both literal attempts stop with the errors above. Through the whole history,
seconds per step (5-step means) grew 0.066, 0.208, 0.266, ... 0.888 as the graph grew to 60
batches (1,920 time steps), and peak memory 165 -> 195 MB; 29.8 s in total against 2.2 s
detached (0.038 s/step). Validation perplexity after 60 steps: 26.73 through the whole
history, 26.67 detached: in this budget the full gradient bought nothing.
"""
from __future__ import annotations

import argparse
import math
import resource
import time

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.models.charlm import CharRNN, evaluate
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.text import BatchStream

from _common import char_data, load_text


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def loss_on(model, x, y, state):
    logits, state = model(x, state)
    return F.cross_entropy(logits.reshape(-1, model.vocab_size), y.reshape(-1)), state


def literal_attempt(model, stream, retain_graph: bool) -> str:
    """Two sequential batches with the state carried but not detached; the error it ends in."""
    opt = tg.optim.Adam(model.parameters(), lr=2e-3)
    state = None
    try:
        for index in range(2):
            loss, state = loss_on(model, *stream.batch(0, index), state)  # no detach
            opt.zero_grad()
            loss.backward(retain_graph=retain_graph)
            opt.step()
    except RuntimeError as e:
        return f"{type(e).__name__}: {e}"
    return "no error (unexpected)"


def train(model, stream, steps: int, full_history: bool, max_seconds: float, log):
    """Adam for `steps` steps; with `full_history`, step k re-runs batches 0..k-1 with the
    current weights and backpropagates through all of them. Stops early once five steps in a
    row average more than `max_seconds`. Returns the seconds (wall clock) of each step."""
    opt = tg.optim.Adam(model.parameters(), lr=2e-3)
    state, times = None, []
    for k in range(steps):
        t0 = time.perf_counter()
        if full_history:
            state = None
            for j in range(k):  # the history the undetached graph would hang on
                _, state = model(stream.batch(0, j)[0], state)
        loss, state = loss_on(model, *stream.batch(0, k), state)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        state = state.detach()
        times.append(time.perf_counter() - t0)
        if (k + 1) % 5 == 0:
            recent = sum(times[-5:]) / 5
            if full_history:
                log(f"  steps {k - 3:3d}-{k + 1:3d}: graphs of up to {k + 1:3d} batches, {recent:6.3f} s/step, "
                    f"peak memory {peak_rss_mb():5.0f} MB")
            if recent > max_seconds:
                break
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", help="a UTF-8 file (default: the local tiny-shakespeare, "
                                              "else CPython's built-in docs)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60, help="at most this many steps")
    ap.add_argument("--max-seconds", type=float, default=1.0,
                    help="stop once 5 steps in a row average more seconds than this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.seq_len, args.steps = 16, 16, 15

    name, text = load_text(args.corpus, max_chars=300_000)
    vocab, train_ids, val_ids = char_data(text)
    val_ids = val_ids[:10_000]
    stream = BatchStream(train_ids, 32, args.seq_len, "sequential", args.seed)
    print(f"{name} (first {len(text):,} characters), hidden {args.hidden}, batches of 32 x {args.seq_len}")

    def fresh_model():
        tg.manual_seed(args.seed)
        return CharRNN(len(vocab), args.hidden)

    print("1. leaving out the detach:")
    print(f"   {literal_attempt(fresh_model(), stream, retain_graph=False)}")
    print("   with retain_graph=True:")
    print(f"   {literal_attempt(fresh_model(), stream, retain_graph=True)}")

    print(f"2. backpropagating through the whole history, until steps average over {args.max_seconds} "
          f"s (at most {args.steps} steps):")
    full = fresh_model()
    full_times = train(full, stream, args.steps, True, args.max_seconds, print)
    steps = len(full_times)
    truncated = fresh_model()
    cut_times = train(truncated, stream, steps, False, math.inf, print)
    full_ppl = evaluate(full, val_ids, 32, args.seq_len)["perplexity"]
    cut_ppl = evaluate(truncated, val_ids, 32, args.seq_len)["perplexity"]
    full_last, cut_last = sum(full_times[-5:]) / 5, sum(cut_times[-5:]) / 5
    print(f"after {steps} steps: whole history {sum(full_times):.1f} s in total, {full_last:.3f} s/step "
          f"at the end, validation perplexity {full_ppl:.2f}; detached (truncated BPTT) "
          f"{sum(cut_times):.1f} s, {cut_last:.3f} s/step at the end, perplexity {cut_ppl:.2f}")
    print(f"result: steps={steps} full_s_per_step={full_last:.3f} detached_s_per_step={cut_last:.3f} "
          f"full_ppl={full_ppl:.3f} detached_ppl={cut_ppl:.3f} peak_rss_mb={peak_rss_mb():.0f} "
          f"uniform_ppl={len(vocab)}")


if __name__ == "__main__":
    main()
