"""A long-distance dependency: which closing bracket comes next in a language of nested brackets?

The lecture notes' motivating example (chapter 10): a left parenthesis must be matched by a
right one, possibly far away, and with several kinds of brackets a finite-state model needs a
state per combination of open brackets. An RNN has to learn to keep that stack in its
hidden state.

The language: strings over `([{`, `)]}` and filler letters `ab`, generated left to right:
open a random kind, close the innermost open bracket, or write a filler letter, never deeper
than 6 levels. A character-level language model (one-hot in, `nn.RNN`/`nn.LSTM`/`nn.GRU`,
linear read-out) learns to predict the next character. When to close is random, so no model
can predict *that* a bracket closes; but *which* bracket closes is determined by the
innermost open one. So the score is: at every position where the next character is a
closing bracket, is the right kind the most probable of the three closers? Chance is 1/3.
Accuracy is reported per nesting depth: deeper means more brackets to remember.

Then the hidden state is opened up (as in the notes' Fig. 10.1): for each unit, the
correlation of its activation with the current depth over held-out strings; the best unit is
a depth counter the model found without being told depth exists.

    python examples/brackets.py
    python examples/brackets.py --quick

Result, default budget (250 steps of 32 strings of 48 characters, hidden 32; 30 s on this
2-core machine while other jobs ran): closing-bracket accuracy RNN 0.867, LSTM 0.915, GRU
0.951 (chance 0.33). By distance back to the opening bracket (1-2, 3-5, 6-10, 11-20, 21+
characters): RNN 1.00 0.93 0.75 0.46 0.40, LSTM 1.00 0.99 0.85 0.68 0.42, GRU 1.00 1.00
0.95 0.83 0.54: distance, not depth, is what makes it hard (by depth 1-6 every model stays
within 0.83-1.00). Best depth-tracking unit: GRU #10 r = +0.662, LSTM #3 r = -0.665, RNN #5
r = +0.118 (the plain RNN found no depth counter in this budget).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn.models.charlm import CharRNN
from tinygrad_rnn.nn import functional as F

OPEN, CLOSE, FILLER = "([{", ")]}", "ab"
VOCAB = OPEN + CLOSE + FILLER
MAX_DEPTH = 6


def bracket_strings(n: int, length: int, rng: np.random.Generator):
    """(ids, depth, distance), each (n, length + 1): depth[i, t] is the number of brackets open
    after character t; where character t closes a bracket, distance[i, t] is how many
    characters back its partner opened (0 elsewhere)."""
    ids = np.empty((n, length + 1), np.int64)
    depth = np.empty((n, length + 1), np.int64)
    distance = np.zeros((n, length + 1), np.int64)
    for i in range(n):
        stack = []  # (kind, position) of every open bracket
        for t in range(length + 1):
            move = rng.choice(3, p=[0.3, 0.25, 0.45])  # open, close, filler
            if move == 0 and len(stack) == MAX_DEPTH or move == 1 and not stack:
                move = 2
            if move == 0:
                kind = int(rng.integers(3))
                stack.append((kind, t))
                ids[i, t] = VOCAB.index(OPEN[kind])
            elif move == 1:
                kind, opened = stack.pop()
                ids[i, t] = VOCAB.index(CLOSE[kind])
                distance[i, t] = t - opened
            else:
                ids[i, t] = VOCAB.index(FILLER[int(rng.integers(len(FILLER)))])
            depth[i, t] = len(stack)
    return ids, depth, distance


def train(cell: str, hidden: int, steps: int, batch: int, length: int, seed: int) -> CharRNN:
    tg.manual_seed(seed)
    model = CharRNN(len(VOCAB), hidden, cell=cell)
    opt = tg.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids, _, _ = bracket_strings(batch, length, rng)  # fresh strings every step: no overfitting
        logits, _ = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, len(VOCAB)), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return model


@tg.no_grad()
def closing_predictions(model: CharRNN, ids):
    """(right, at_close), each (n, length): at_close marks positions whose next character
    closes a bracket; right says the model ranks that closer above the other two."""
    model.eval()
    logits, _ = model(ids[:, :-1])
    closers = [VOCAB.index(c) for c in CLOSE]
    predicted = np.asarray(closers)[np.argmax(logits.data[..., closers], axis=-1)]
    target = ids[:, 1:]
    return predicted == target, np.isin(target, closers)


def accuracy_by(groups, right, at_close) -> list:
    """[(correct, count)] for each boolean mask in `groups`, over closing positions."""
    return [(int(np.sum(right & at_close & g)), int(np.sum(at_close & g))) for g in groups]


def table_row(label, scores) -> str:
    return f"{label:>5}  " + "  ".join(f"{c / n:6.2f}" if n else "     -" for c, n in scores)


@tg.no_grad()
def depth_unit(model: CharRNN, ids, depth):
    """(unit, correlation): the hidden unit whose activation correlates best with the depth."""
    x = F.one_hot(ids, len(VOCAB), dtype=np.float32)
    hidden, _ = model.rnn(x)  # (n, T, H): the last layer's h at every step
    h = hidden.data.reshape(-1, hidden.shape[-1]).astype(np.float64)
    d = depth.reshape(-1).astype(np.float64)
    hc, dc = h - h.mean(0), d - d.mean()
    r = (hc * dc[:, None]).sum(0) / (np.sqrt((hc ** 2).sum(0) * (dc ** 2).sum()) + 1e-12)
    unit = int(np.argmax(np.abs(r)))
    return unit, float(r[unit])


DISTANCE_BINS = [(1, 2), (3, 5), (6, 10), (11, 20), (21, 10**9)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.length = 15, 32

    test_ids, test_depth, test_distance = bracket_strings(200, args.length, np.random.default_rng(12345))
    print(f"a string of the language: {''.join(VOCAB[i] for i in test_ids[0])}")
    print(f"training each model for {args.steps} steps of {args.batch_size} fresh strings of "
          f"{args.length} characters, hidden {args.hidden}; scoring 200 held-out strings")
    # the depth before the closing character, and how far back its partner opened
    depth, distance = test_depth[:, :-1], test_distance[:, 1:]
    by_depth = [depth == k for k in range(1, MAX_DEPTH + 1)]
    by_distance = [(distance >= lo) & (distance <= hi) for lo, hi in DISTANCE_BINS]
    depth_rows, distance_rows, summary = [], [], []
    for cell in ("rnn", "lstm", "gru"):
        t0 = time.perf_counter()
        model = train(cell, args.hidden, args.steps, args.batch_size, args.length, args.seed)
        seconds = time.perf_counter() - t0
        right, at_close = closing_predictions(model, test_ids)
        accuracy = right[at_close].mean()
        unit, r = depth_unit(model, test_ids, test_depth)
        depth_rows.append(table_row(cell, accuracy_by(by_depth, right, at_close)))
        distance_rows.append(table_row(cell, accuracy_by(by_distance, right, at_close)))
        print(f"{cell}: closing-bracket accuracy {accuracy:.3f}, trained in {seconds:.1f} s; hidden unit "
              f"#{unit} follows the depth with correlation {r:+.3f}")
        summary.append(f"{cell}_accuracy={accuracy:.3f} {cell}_depth_r={r:+.3f}")
    counts = [n for _, n in accuracy_by(by_depth, at_close, at_close)]
    print(f"\naccuracy by nesting depth before the bracket closes (chance 0.33; positions per depth {counts}):")
    print(f"{'cell':>5}  " + "  ".join(f"{k:>6d}" for k in range(1, MAX_DEPTH + 1)))
    print("\n".join(depth_rows))
    counts = [n for _, n in accuracy_by(by_distance, at_close, at_close)]
    print(f"\naccuracy by distance back to the opening bracket (positions per bin {counts}):")
    print(f"{'cell':>5}  " + "  ".join(f"{f'{lo}-{hi}' if hi < 10**9 else f'{lo}+':>6}" for lo, hi in DISTANCE_BINS))
    print("\n".join(distance_rows))
    print("result: " + " ".join(summary))


if __name__ == "__main__":
    main()
