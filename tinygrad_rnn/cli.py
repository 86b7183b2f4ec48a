"""`tinygrad-rnn train | eval | sample`: the char-RNN language model from the command line;
`graph | viz hidden | gradcheck | profile`: the study instruments (viz.py, debug.py)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys

from . import checkpoint
from .models import charlm, sampling


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its errors on one line: the message and where help is, not the
    whole usage text (train's runs to a dozen lines)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


class _NoDefaults:
    """Stands in for TrainConfig() to build a parser that records only the options typed."""

    def __getattr__(self, name):
        return argparse.SUPPRESS


def _add_train(sub, defaults=None):
    p = sub.add_parser("train", help="train a character (or word) RNN language model",
                       argument_default=argparse.SUPPRESS if defaults is not None else None)
    d = defaults or charlm.TrainConfig()
    p.add_argument("--corpus", default=d.corpus,
                   help="'builtin' (default: CPython's docs, offline), 'shakespeare', 'timemachine' or a UTF-8 file")
    p.add_argument("--level", choices=["char", "word"], default=d.level)
    p.add_argument("--max-vocab", type=int, default=d.max_vocab, help="word level: keep this many words")
    p.add_argument("--cell", choices=sorted(charlm.CELLS), default=d.cell)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--embedding", type=int, default=d.embedding, help="0: one-hot input")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", choices=["sgd", "adagrad", "rmsprop", "adam"], default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=d.lr_schedule,
                   help="cosine: from --lr down to --min-lr over the run's steps")
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--clip-norm", type=float, default=d.clip_norm, help="0 disables")
    p.add_argument("--clip-value", type=float, default=d.clip_value)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--sampling", choices=["sequential", "random"], default=d.sampling)
    p.add_argument("--val-frac", type=float, default=d.val_frac)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every)
    p.add_argument("--out", default=d.out, help="directory for checkpoints (last.npz)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.npz")
    p.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _typed_train_options(argv) -> set:
    """The train options on the command line: a typed `--hidden 256` counts even though it is
    the default, so `--resume` can refuse it when the run was trained with another size."""
    ap = argparse.ArgumentParser(add_help=False)
    _add_train(ap.add_subparsers(dest="command"), defaults=_NoDefaults())
    return set(vars(ap.parse_known_args(argv)[0])) - {"command", "func"}


def cmd_train(args) -> int:
    from . import fast

    fast.retain_freed_memory()  # a training process reuses its freed arrays (fast/malloc.py)
    fields = {f.name for f in dataclasses.fields(charlm.TrainConfig)}
    cfg = charlm.TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if cfg.clip_norm == 0:
        cfg.clip_norm = None
    if cfg.clip_value == 0:
        cfg.clip_value = None
    if cfg.steps is None and cfg.epochs is None and not cfg.resume:
        cfg.steps = 1000  # --resume without a budget continues to the run's own
    bar = None
    draw_bar = not args.no_progress and not args.json

    def log(msg):
        if args.json:
            return
        if bar is not None:
            bar.write(msg)
        else:
            print(msg, file=sys.stderr)

    def progress(record, tok_s):
        nonlocal bar
        if draw_bar and bar is None:  # drawn from the first step on: a refusal before it leaves no empty bar
            from tqdm import tqdm  # only the CLI draws bars; the library stays dependency-light

            bar = tqdm(total=cfg.steps, initial=record["step"] - 1, unit="step", dynamic_ncols=True, file=sys.stderr)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", ppl=f"{math.exp(min(record['loss'], 50)):.2f}",
                            tok_s=f"{tok_s:,.0f}", grad=f"{record['grad_norm']:.2f}")

    try:
        typed = getattr(args, "typed_options", None)
        result = charlm.train(cfg, log=log, progress=progress, asked=None if typed is None else typed & fields)
    except charlm.TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except charlm.TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return e.exit_code  # 130 for SIGINT, 143 for SIGTERM, as a shell reports a killed job
    finally:
        if bar is not None:
            bar.close()
    val = result["val"] or {}
    summary = {"steps": result["steps"], "train_loss": result["history"][-1]["loss"] if result["history"] else None,
               "val_loss": val.get("nats"), "val_bits": val.get("bits"), "val_ppl": val.get("perplexity"),
               "tokens_per_s": result["tokens_per_s"], "wall_s": result["wall_s"], "checkpoint": result["checkpoint"],
               "already_complete": result["complete"]}
    if args.json:
        print(_json_line(summary))
    elif not result["complete"]:  # a complete run said so in the log; there is nothing new to show
        if val:
            print(f"validation: {val['nats']:.4f} nats/token, {val['bits']:.4f} bits/token, perplexity "
                  f"{val['perplexity']:.3f} (uniform baseline {val['uniform_perplexity']})")
        print(f"{result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s")
        vocab = result["vocab"]
        text = charlm.sample(result["model"], vocab, None, 300, temperature=0.8, seed=cfg.seed)
        print("sample:\n" + sampling.join_text(vocab, sampling.default_prime(vocab), text))
    return 0


def _json_line(d: dict) -> str:
    """`d` as one line of strict JSON: NaN and Infinity are not JSON, so a value that is not
    finite becomes null and the "not_finite" field says what it was ({"perplexity": "inf"})."""
    odd = {k: str(v) for k, v in d.items() if isinstance(v, float) and not math.isfinite(v)}
    out = {k: (None if k in odd else v) for k, v in d.items()}
    if odd:
        out["not_finite"] = odd
    return json.dumps(out, allow_nan=False)


def _add_eval(sub):
    p = sub.add_parser("eval", help="perplexity of a checkpoint on its validation split or a file")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--corpus", help="evaluate on this whole file/corpus instead of the validation split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .text import load_corpus, split

    model, vocab, meta = charlm.load_model(args.checkpoint)
    cfg = meta["config"]
    if args.corpus:
        ids = vocab.encode(load_corpus(args.corpus))
    else:
        ids = split(vocab.encode(load_corpus(cfg["corpus"])), cfg["val_frac"])[1]
    res = charlm.evaluate(model, ids, cfg["batch_size"], cfg["seq_len"])
    if args.json:
        print(_json_line(res))
    else:
        print(f"{res['tokens']} tokens: {res['nats']:.4f} nats/token, {res['bits']:.4f} bits/token, "
              f"perplexity {res['perplexity']:.3f} (uniform baseline {res['uniform_perplexity']})")
    return 0


def _add_sample(sub):
    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prime", default=None, help="text to start from (default: a newline, or for a vocabulary "
                   "without one a space or the first token; word level: a full stop)")
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--beam", type=int, default=0, help="beam width (length-normalised score)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    model, vocab, _ = charlm.load_model(args.checkpoint)
    if args.beam:
        text = charlm.beam_search(model, vocab, args.prime or "", args.length, args.beam)
    else:
        text = charlm.sample(model, vocab, args.prime, args.length, args.temperature, args.top_k, args.seed)
    prime = args.prime if args.prime and len(vocab.encode(args.prime)) else sampling.default_prime(vocab)
    print(sampling.join_text(vocab, prime, text))
    return 0


def _add_graph(sub):
    p = sub.add_parser("graph", help="draw the graph of an RNNCell unrolled a few steps, plus a loss (Graphviz)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="rnn")
    p.add_argument("--input", type=int, default=3, help="input size (also the head's output size)")
    p.add_argument("--hidden", type=int, default=4)
    p.add_argument("--out", default=".", help="directory for CELL_graph.dot (and .svg/.png), CELL being --cell")
    p.add_argument("--format", choices=["svg", "png"], default="svg")
    p.set_defaults(func=cmd_graph)


# A drawing of more steps is a wall of boxes; Graphviz's layout time grows fast with the graph
# (80 steps took a minute), so past GRAPH_RENDER_STEPS only the .dot file is written.
GRAPH_MAX_STEPS, GRAPH_RENDER_STEPS = 500, 30


def cmd_graph(args) -> int:
    from . import viz
    from .models import config

    if not 1 <= args.steps <= GRAPH_MAX_STEPS:
        raise ValueError(f"graph --steps: must be 1 or more and at most {GRAPH_MAX_STEPS}, got {args.steps}")
    for flag, value in (("--input", args.input), ("--hidden", args.hidden)):
        if value < 1:
            raise ValueError(f"graph {flag}: must be 1 or more, got {value}")
    H, I = args.hidden, args.input
    weights = config.GATES[args.cell] * H * (I + H + 2) + I * (H + 1)  # the cell and its read-out
    config.check_memory(4 * 3 * weights, f"graph --hidden {args.hidden} --input {args.input}")  # weights, grads, work
    try:
        pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"graph --out {args.out!r} cannot be used as a directory: {e}") from e
    loss, params = viz.unrolled_cell_loss(args.steps, args.cell, args.input, args.hidden)
    g = viz.collect_graph(loss, params)
    dot = pathlib.Path(args.out) / f"{args.cell}_graph.dot"
    if args.steps <= GRAPH_RENDER_STEPS:
        try:
            dot, rendered = viz.write_graph(loss, dot, params, fmt=args.format)
        except RuntimeError as e:  # dot failed or took too long; the .dot file is written
            print(f"error: {e}", file=sys.stderr)
            return 1
    else:
        dot.parent.mkdir(parents=True, exist_ok=True)
        dot.write_text(viz.to_dot(loss, params), encoding="utf-8")
        rendered = None
    print(f"{args.steps} steps of {args.cell}: {g.count('op')} op nodes, {g.count('leaf')} parameters, "
          f"{g.count('const')} inputs, {len(g.edges)} edges; weight_hh feeds {g.uses('weight_hh')} ops "
          f"(one node, shared by every step)")
    print(f"wrote {dot}")
    if rendered is not None:
        print(f"wrote {rendered}")
    elif args.steps > GRAPH_RENDER_STEPS:
        print(f"not rendered: past {GRAPH_RENDER_STEPS} steps Graphviz takes minutes to lay the graph out; to "
              f"render it anyway, run `dot -T{args.format} {dot} -o {dot.with_suffix('.' + args.format)}`",
              file=sys.stderr)
    else:
        print(viz.GRAPHVIZ_HINT.format(dot=dot, svg=dot.with_suffix("." + args.format)))
    return 0


def _add_viz(sub):
    p = sub.add_parser("viz", help="plots of a trained model")
    vsub = p.add_subparsers(dest="plot", required=True)
    h = vsub.add_parser("hidden", help="heat map of the hidden units over a text (units x characters)")
    h.add_argument("--checkpoint", required=True)
    h.add_argument("--text", required=True)
    h.add_argument("--out", default="hidden.png")
    h.add_argument("--units", type=int, default=None,
                   help="draw this many units, spread evenly from slowest- to fastest-changing (default all)")
    h.set_defaults(func=cmd_viz_hidden)
    c = vsub.add_parser("curve", help="training and validation loss of a run against steps")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--out", default="curve.png")
    c.set_defaults(func=cmd_viz_curve)


def _plot_path(out: str, name: str) -> pathlib.Path:
    """Where a plot goes: `out`, or `out/name` for a directory; a name without a suffix gets
    `.png`, which matplotlib would add anyway (said here so the report names the file)."""
    path = pathlib.Path(out)
    if path.is_dir():
        return path / name
    return path if path.suffix else path.with_suffix(".png")


def cmd_viz_hidden(args) -> int:
    from . import viz

    model, vocab, _ = charlm.load_model(args.checkpoint)
    out = _plot_path(args.out, "hidden.png")
    act = viz.hidden_heatmap(model, vocab, args.text, out, args.units)
    slow, fast = act.order[0], act.order[-1]
    print(f"wrote {out}: {len(act.shown)} of {act.states.shape[1]} units over {len(act.states)} {vocab.level}s; "
          f"mean |h_t - h_(t-1)| from {act.speed[slow]:.4f} (unit {slow}) to {act.speed[fast]:.4f} (unit {fast})")
    return 0


def cmd_viz_curve(args) -> int:
    from . import viz

    _, _, meta = charlm.load_model(args.checkpoint)
    out = _plot_path(args.out, "curve.png")
    cfg, history = meta["config"], meta["history"]
    if not (isinstance(history, list) and all(isinstance(r, dict) and type(r.get("step")) is int
                                              and isinstance(r.get("loss"), (int, float)) for r in history)):
        raise checkpoint.CheckpointError(f"checkpoint {str(args.checkpoint)!r}: 'history' is not a list of "
                                         f"steps with their loss")
    title = (f"{cfg.get('cell')}, {cfg.get('layers')} x {cfg.get('hidden')}, dropout {cfg.get('dropout')}, "
             f"{cfg.get('optimizer')} lr {cfg.get('lr')} ({cfg.get('lr_schedule', 'constant')})")
    curve = viz.training_curve(history, out, title)
    best = curve["best_val"]
    print(f"wrote {out}: {curve['steps']} steps" + (f", best validation {best[1]:.4f} nats at step {best[0]}"
                                                     if best else ", no validation measured"))
    return 0


def _add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="finite-difference check of every op and the unrolled RNN/LSTM/GRU cells")
    p.add_argument("--op", default=None, help="only ops whose name matches this shell pattern, e.g. 'matmul*'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--examples", type=int, default=5, help="random shapes and values drawn per op")
    p.add_argument("--backend", choices=["numba", "numpy"], default=None)
    p.set_defaults(func=cmd_gradcheck)


# hypothesis draws each example anew; past this many per op a run takes hours, not minutes
GRADCHECK_MAX_EXAMPLES = 1000


def cmd_gradcheck(args) -> int:
    import importlib.util

    from . import debug
    from .kernels import set_backend

    if importlib.util.find_spec("hypothesis") is None:
        print("error: gradcheck draws shapes with hypothesis: pip install hypothesis "
              "(or pip install -e '.[test]')", file=sys.stderr)
        return 2
    if not 1 <= args.examples <= GRADCHECK_MAX_EXAMPLES:
        raise ValueError(f"gradcheck --examples: must be 1 to {GRADCHECK_MAX_EXAMPLES}, got {args.examples}")
    if args.seed < 0:
        raise ValueError(f"gradcheck --seed: must be 0 or more, got {args.seed}")
    if args.backend:
        set_backend(args.backend)
    results = debug.check_gradients(args.op, seed=args.seed, examples=args.examples)
    print(debug.format_checks(results))
    return 0 if all(r.passed for r in results) else 1


def _add_profile(sub):
    p = sub.add_parser("profile", help="time every op type over a few char-RNN training steps")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="unprofiled steps first (numba compiles on first use)")
    p.add_argument("--cell", choices=sorted(charlm.CELLS), default="rnn")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--corpus", default=None)
    p.add_argument("--top", type=int, default=None, help="show only the N most expensive ops")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args) -> int:
    from . import debug, fast

    fast.retain_freed_memory()  # as `train` does

    for flag, value, low in (("--steps", args.steps, 1), ("--warmup", args.warmup, 0), ("--top", args.top, 1)):
        if value is not None and value < low:
            raise ValueError(f"profile {flag}: must be {low} or more, got {value}")
    cfg = dict(corpus=args.corpus, cell=args.cell, hidden=args.hidden, seq_len=args.seq_len,
               batch_size=args.batch_size, eval_every=0, out=None)
    if args.warmup:
        charlm.train(charlm.TrainConfig(steps=args.warmup, **cfg), log=lambda m: None)
    with debug.profile() as prof:
        res = charlm.train(charlm.TrainConfig(steps=args.steps, **cfg), log=lambda m: None)
    print(f"{res['steps']} training steps of a {args.cell} char-RNN (hidden {args.hidden}, batch "
          f"{args.batch_size}, {args.seq_len}-step BPTT), {res['tokens_per_s']:,.0f} tokens/s while profiled\n")
    print(prof.table(args.top))
    return 0


def main(argv=None) -> int:
    ap = _Parser(prog="tinygrad-rnn", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_sample(sub)
    _add_graph(sub)
    _add_viz(sub)
    _add_gradcheck(sub)
    _add_profile(sub)
    args = ap.parse_args(argv)
    if args.command == "train":
        args.typed_options = _typed_train_options(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (KeyError, ValueError, OSError) as e:
        # OSError: a file or directory named on the command line that cannot be read or written
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(f"error: {args.command}: out of memory{': ' + _one_line(e) if str(e) else ''}; ask for a smaller "
              f"model or text", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C outside training's own handling, or pressed twice during it
        print(f"{args.command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    # KeyError's str() is the repr of its argument, quotes included
    text = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
