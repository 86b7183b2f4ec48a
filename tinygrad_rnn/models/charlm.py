"""The character-level RNN language model: a recurrent layer over one-hot (or embedded)
tokens, a linear read-out, next-token cross-entropy. Training, evaluation (perplexity),
sampling and beam search live here too, so the CLI and Python users share one code path.

BPTT is not written anywhere: `nn.RNN`/`nn.LSTM`/`nn.GRU` loop a cell over time and
`loss.backward()` walks the graph that loop recorded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import signal
import threading
import time

import numpy as np

from .. import checkpoint, nn, optim, rng
from ..autograd import no_grad
from ..nn import functional as F
from ..tensor import Tensor
from ..text import BatchStream, Vocab, load_corpus, split

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(nn.Module):
    """tokens (B, T) -> logits (B, T, V), carrying the recurrent state.

    `embedding=0` feeds one-hot vectors, as min-char-rnn and d2l do, given to the recurrent
    layer as the token ids they stand for (it gathers columns of W_ih instead of multiplying by
    the one-hot rows: the same numbers, nn/rnn.py); `embedding=E` learns an E-dimensional
    embedding instead."""

    def __init__(self, vocab_size: int, hidden_size: int = 256, num_layers: int = 1, cell: str = "rnn",
                 embedding: int = 0, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.vocab_size, self.cell = vocab_size, cell
        self.embed = nn.Embedding(vocab_size, embedding) if embedding else None
        self.rnn = CELLS[cell](embedding or vocab_size, hidden_size, num_layers,
                               dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None):
        tokens = np.asarray(tokens.data if isinstance(tokens, Tensor) else tokens)
        out, state = self.rnn(self._input(tokens), state)
        return self.head(self.drop(out)), state

    def _input(self, tokens: np.ndarray):
        """The recurrent layer's input: embeddings, or the ids standing for one-hot rows (the
        layer's step checks them against its input size, the vocabulary)."""
        return tokens if self.embed is None else self.embed(tokens)


def detach_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def _state_arrays(state) -> dict:
    if state is None:
        return {}
    parts = state if isinstance(state, tuple) else (state,)
    return {f"state.{i}": s.data for i, s in enumerate(parts)}


def _state_from_arrays(arrays: dict, cell: str):
    parts = [Tensor(arrays[k]) for k in sorted(k for k in arrays if k.startswith("state."))]
    if not parts:
        return None
    return tuple(parts) if cell == "lstm" else parts[0]


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass
class TrainConfig:
    corpus: str | None = None       # None: the built-in corpus (CPython's docs)
    level: str = "char"             # "char" or "word"
    max_vocab: int = 10_000         # word level only
    cell: str = "rnn"
    hidden: int = 256
    layers: int = 1
    embedding: int = 0              # 0: one-hot input
    dropout: float = 0.0
    seq_len: int = 64
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 2e-3
    clip_norm: float | None = 5.0
    clip_value: float | None = None
    steps: int | None = None
    epochs: float | None = None
    sampling: str = "sequential"
    val_frac: float = 0.1
    seed: int = 0
    eval_every: int = 200
    sample_every: int = 0
    sample_len: int = 200
    out: str | None = None          # directory for checkpoints
    resume: bool = False


def make_optimizer(name: str, params, lr: float):
    if name == "sgd":
        return optim.SGD(params, lr=lr)
    if name == "adagrad":
        return optim.Adagrad(params, lr=lr)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr)
    if name == "adam":
        return optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be sgd, adagrad, rmsprop or adam, got {name!r}")


# ----------------------------------------------------------------------------- evaluation
@no_grad()
def evaluate(model: CharRNN, ids: np.ndarray, batch_size: int = 32, seq_len: int = 64) -> dict:
    """Mean next-token negative log-likelihood over `ids`: nats, bits and perplexity per token.

    The text is cut into `batch_size` parallel streams read left to right with the state
    carried, so every prediction after the first of a stream has its full left context."""
    was_training = model.training
    model.eval()
    B = max(1, min(batch_size, (len(ids) - 1) // max(seq_len, 1)))
    n = (len(ids) - 1) // B
    if n < 1:
        raise ValueError(f"evaluation text of {len(ids)} tokens is too short")
    xs = ids[: n * B].reshape(B, n)
    ys = ids[1: n * B + 1].reshape(B, n)
    total, count, state = 0.0, 0, None
    for start in range(0, n, seq_len):
        x, y = xs[:, start:start + seq_len], ys[:, start:start + seq_len]
        logits, state = model(x, state)
        total += float(F.cross_entropy(logits.reshape(-1, model.vocab_size), y.reshape(-1), reduction="sum").item())
        count += y.size
    model.train(was_training)
    nats = total / count
    return {"nats": nats, "bits": nats / math.log(2), "perplexity": math.exp(nats), "tokens": count,
            "uniform_perplexity": model.vocab_size}


# ----------------------------------------------------------------------------- generation
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


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, model, opt, cfg: TrainConfig, vocab: Vocab, step: int, position, state, history,
                    corpus_sha256: str | None = None):
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_arrays, opt_meta = _split_optimizer_state(opt.state_dict())
    arrays.update(opt_arrays)
    arrays.update(_state_arrays(state))
    meta = {"config": dataclasses.asdict(cfg), "vocab": vocab.to_dict(), "step": step,
            "position": list(position), "rng": rng.get_state(), "optimizer": opt_meta,
            "history": history, "corpus_sha256": corpus_sha256}
    return checkpoint.save(path, arrays, meta)


def _split_optimizer_state(sd: dict):
    """The optimizer's state_dict as arrays (per-parameter buffers) plus JSON (hyper-parameters)."""
    arrays, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, buffers in sd["state"].items():
        meta["state"][str(pid)] = {}
        for name, value in buffers.items():
            if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
                value = value.item()
            if isinstance(value, np.ndarray):
                arrays[f"optim.{pid}.{name}"] = value
                meta["state"][str(pid)][name] = {"array": f"optim.{pid}.{name}"}
            else:
                meta["state"][str(pid)][name] = {"value": value}
    return arrays, meta


def _join_optimizer_state(arrays: dict, meta: dict) -> dict:
    state = {}
    for pid, buffers in meta["state"].items():
        state[int(pid)] = {name: (arrays[v["array"]] if "array" in v else v["value"]) for name, v in buffers.items()}
    return {"param_groups": meta["param_groups"], "state": state}


# What a checkpoint's JSON may hold. Nothing in it is ever imported, called or evaluated, but
# a value of the wrong kind (a dict where a layer count belongs, a cell name we do not have)
# would otherwise surface steps later as a confusing crash, so each one is checked on load.
_JSON_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
_CHOICES = {"cell": tuple(CELLS), "level": ("char", "word"), "optimizer": ("sgd", "adagrad", "rmsprop", "adam"),
            "sampling": ("sequential", "random")}
_AT_LEAST = {"hidden": 1, "layers": 1, "seq_len": 1, "batch_size": 1, "max_vocab": 1, "embedding": 0, "lr": 0,
             "steps": 0, "eval_every": 0, "sample_every": 0, "sample_len": 0, "clip_norm": 0, "clip_value": 0,
             "epochs": 0}


def _is_kind(value, annotation: str) -> bool:
    kinds = [_JSON_KINDS.get(part.strip()) for part in annotation.split("|")]
    if any(k is None for k in kinds):
        return True  # a field type this check does not know; the code using it will judge
    kinds = tuple(t for k in kinds for t in k)
    # bool is an int subclass in Python, but `"hidden": true` is not a layer size
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Raise ValueError naming the first field of `cfg` that no training run could use."""
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if not _is_kind(value, f.type):
            raise ValueError(f"config field {f.name!r} is {value!r}, expected {f.type}")
        if f.name in _CHOICES and value not in _CHOICES[f.name]:
            raise ValueError(f"config field {f.name!r} is {value!r}, expected one of {list(_CHOICES[f.name])}")
        if f.name in _AT_LEAST and value is not None and not value >= _AT_LEAST[f.name]:
            raise ValueError(f"config field {f.name!r} is {value!r}, expected at least {_AT_LEAST[f.name]}")
    if not 0 <= cfg.dropout < 1 or not 0 <= cfg.val_frac < 1:
        raise ValueError(f"config fields 'dropout' and 'val_frac' must be in [0, 1), got {cfg.dropout!r} "
                         f"and {cfg.val_frac!r}")
    return cfg


def _config_from_checkpoint(d, path) -> TrainConfig:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    if not isinstance(d, dict):
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: 'config' is not a JSON object")
    unknown, missing = sorted(set(d) - set(names)), [n for n in names if n not in d]
    if unknown or missing:
        problems = [f"has unknown field(s) {unknown}"] * bool(unknown) + [f"lacks field(s) {missing}"] * bool(missing)
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: config {' and '.join(problems)}; it was not "
                                         f"written by this version of train()")
    try:
        return check_config(TrainConfig(**d))
    except ValueError as e:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: {e}") from e


def _vocab_from_checkpoint(d, path) -> Vocab:
    tokens = d.get("tokens") if isinstance(d, dict) else None
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: 'vocab' must hold a non-empty list of "
                                         f"string tokens")
    if d.get("level") == "char" and any(len(t) != 1 for t in tokens):
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: a character vocabulary holds a token "
                                         f"that is not one character")
    if not isinstance(d.get("unk"), (str, type(None))):
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: vocab 'unk' is {d.get('unk')!r}")
    try:
        return Vocab.from_dict(d)
    except (KeyError, ValueError) as e:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: bad vocabulary: {e}") from e


def _read_run(path, needs=("config", "vocab")):
    """(arrays, meta, config, vocab) of a checkpoint that train() wrote, each part checked."""
    arrays, meta = checkpoint.load(path)
    missing = [k for k in needs if k not in meta]
    if missing:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r} lacks {missing} in its metadata")
    return arrays, meta, _config_from_checkpoint(meta["config"], path), _vocab_from_checkpoint(meta["vocab"], path)


def _model_from_arrays(arrays: dict, cfg: TrainConfig, vocab: Vocab, path) -> CharRNN:
    weights = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    # The config decides how much memory the model takes before load_state_dict can compare
    # anything, so its sizes are checked against the arrays first: a hand-edited `hidden` of
    # 100,000 is reported here instead of allocating gigabytes of weights it will throw away.
    sizes = {"head.weight": (len(vocab), cfg.hidden), "rnn.weight_hh_l0": (None, cfg.hidden),
             f"rnn.weight_hh_l{cfg.layers - 1}": (None, cfg.hidden)}
    if cfg.embedding:
        sizes["embed.weight"] = (len(vocab), cfg.embedding)
    for key, want in sizes.items():
        got = weights.get(key)
        if got is None:
            raise checkpoint.CheckpointError(f"checkpoint {str(path)!r} has no array 'model.{key}', which its "
                                             f"config (cell={cfg.cell}, layers={cfg.layers}) needs")
        if got.ndim != 2 or any(w is not None and g != w for g, w in zip(got.shape, want)):
            raise checkpoint.CheckpointError(
                f"checkpoint {str(path)!r}: 'model.{key}' has shape {got.shape}, but its vocabulary "
                f"({len(vocab)} tokens) and config (hidden={cfg.hidden}, embedding={cfg.embedding}) need "
                f"{tuple('*' if w is None else w for w in want)}")
    model = CharRNN(len(vocab), cfg.hidden, cfg.layers, cfg.cell, cfg.embedding, cfg.dropout)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r} does not fit the model its config "
                                         f"describes: {e}") from e
    return model


def load_model(path) -> tuple[CharRNN, Vocab, dict]:
    """A trained model, its vocabulary and the checkpoint's metadata.

    Raises `checkpoint.CheckpointError` (a ValueError) naming the file and the problem for
    anything but an intact checkpoint that train() wrote: damaged or foreign files, missing or
    ill-typed metadata, arrays whose shapes do not match the config and vocabulary."""
    arrays, meta, cfg, vocab = _read_run(path)
    return _model_from_arrays(arrays, cfg, vocab, path), vocab, meta


# ----------------------------------------------------------------------------- training
class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at a step boundary, after the checkpoint was written.

    A KeyboardInterrupt, so a script that does not catch it stops as it would on Ctrl-C, and
    an `except Exception` around train() cannot swallow the user's request to stop."""

    def __init__(self, signum: int, step: int, checkpoint_path: str | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint_path
        if checkpoint_path:
            kept = f"checkpoint {checkpoint_path} holds step {step}; continue with --resume"
        else:
            kept = "nothing was saved: pass --out to keep checkpoints"
        super().__init__(f"{signal.Signals(signum).name}: training stopped after step {step}; {kept}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for death by this signal: 130, 143


class _StopRequests:
    """While active, SIGINT and SIGTERM ask the training loop to stop at the next step boundary.

    The handler only records the signal: a checkpoint written from inside it could catch the
    model half-updated. A second signal raises KeyboardInterrupt at once, for a user who would
    rather lose the unfinished steps than wait; the checkpoint on disk stays intact either way,
    because it is only ever replaced whole. Python runs handlers in the main thread only, so
    elsewhere (train() called from a worker thread) nothing is installed; signals that were
    being ignored (a job started with nohup) stay ignored."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once, without a checkpoint")
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            # None: the previous handler was installed outside Python; the default is the best guess
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        return False


# Options that may differ when resuming: the budget, the corpus's path (its vocabulary is
# checked instead) and what is reported along the way. Every other field defines the run; a
# different value would silently train something else.
_RESUME_BUDGET = ("steps", "epochs", "out", "resume")
_RESUME_MAY_CHANGE = ("corpus", "eval_every", "sample_every", "sample_len")


def _resume_config(cfg: TrainConfig, saved: TrainConfig, path, asked=None) -> TrainConfig:
    """The checkpoint's config with the budget of `cfg`. The fields in `asked` (by default,
    those of `cfg` that differ from TrainConfig's defaults) count as asked for: a conflicting
    one is refused, naming it."""
    if asked is None:
        default = TrainConfig()
        asked = {f.name for f in dataclasses.fields(TrainConfig) if getattr(cfg, f.name) != getattr(default, f.name)}
    conflicts = [f"{n}={getattr(cfg, n)!r} (the checkpoint has {getattr(saved, n)!r})" for n in sorted(asked)
                 if n not in _RESUME_BUDGET + _RESUME_MAY_CHANGE and getattr(cfg, n) != getattr(saved, n)]
    if conflicts:
        raise ValueError(f"--resume from {path}: the run was trained with other settings than you asked for: "
                         f"{', '.join(conflicts)}. Leave those options out to continue the run as it was, or "
                         f"train a new model into a new --out.")
    keep = {n: getattr(cfg, n) for n in _RESUME_MAY_CHANGE if n in asked}
    return dataclasses.replace(saved, **keep, **{n: getattr(cfg, n) for n in _RESUME_BUDGET})


def _vocab_difference(saved: Vocab, new: Vocab) -> str:
    def show(tokens):
        return ", ".join(repr(t) for t in tokens[:10]) + (" ..." if len(tokens) > 10 else "")

    if saved.level != new.level:
        return f"the checkpoint's is {saved.level}-level, this one {new.level}-level"
    gained = [t for t in new.tokens if t not in saved.index]
    lost = [t for t in saved.tokens if t not in new.index]
    parts = [f"{len(saved)} tokens in the checkpoint, {len(new)} in this text"]
    if gained:
        parts.append(f"new here: {show(gained)}")
    if lost:
        parts.append(f"absent here: {show(lost)}")
    if not gained and not lost:
        parts.append("the same tokens in another order")
    return "; ".join(parts)


def _resume_state(meta: dict, arrays: dict, cfg: TrainConfig, batches_per_epoch: int, path):
    """(step, (epoch, index), history, carried state), checked against the run they belong to."""
    step, position, history = meta["step"], meta["position"], meta["history"]
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: 'step' is {step!r}, not a step count")
    if not (isinstance(position, list) and len(position) == 2 and all(type(p) is int for p in position)
            and position[0] >= 0 and 0 <= position[1] < batches_per_epoch):
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: 'position' is {position!r}, not "
                                         f"[epoch, batch index < {batches_per_epoch}]")
    if not isinstance(history, list):
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: 'history' is not a list")
    state = _state_from_arrays(arrays, cfg.cell)
    want = (cfg.layers, cfg.batch_size, cfg.hidden)
    for s in (state if isinstance(state, tuple) else (state,) if state is not None else ()):
        if s.shape != want:
            raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: carried state has shape {s.shape}, "
                                             f"the run needs {want}")
    return step, tuple(position), history, state


def _check_hyperparameter(name, value, fresh: dict) -> None:
    if name not in fresh:
        raise ValueError(f"unknown hyper-parameter {name!r}")
    like, numbers = fresh[name], (int, float)
    if isinstance(like, (list, tuple)):
        ok = isinstance(value, list) and len(value) == len(like) and all(type(v) in numbers for v in value)
    else:
        ok = isinstance(value, bool) == isinstance(like, bool) and isinstance(value, numbers)
    if not ok:
        raise ValueError(f"hyper-parameter {name!r} is {value!r}, expected a value like {like!r}")


def _restore_optimizer(opt, arrays: dict, meta: dict, path) -> None:
    try:
        sd = _join_optimizer_state(arrays, meta)
        for saved, fresh in zip(sd["param_groups"], opt.param_groups):
            for name, value in saved.items():
                if name != "params":
                    _check_hyperparameter(name, value, fresh)
        for buffers in sd["state"].values():
            for name, value in buffers.items():
                if not isinstance(value, np.ndarray) and type(value) not in (int, float):
                    raise ValueError(f"state {name!r} is {value!r}, not an array or a number")
        opt.load_state_dict(sd)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: unusable optimizer state: "
                                         f"{type(e).__name__}: {e}") from e


def train(cfg: TrainConfig, log=print, progress=None, asked=None) -> dict:
    """Train per `cfg`; returns {"history": [...], "val": {...}, "steps", "tokens_per_s", ...}.

    With `cfg.out`, a checkpoint `last.npz` is written atomically at every evaluation and at
    the end; `cfg.resume` continues from it exactly (parameters, optimizer, RNG, data position
    and carried hidden state), so an interrupted run reproduces the uninterrupted loss curve.
    On resume only the budget (steps/epochs), the corpus path and the reporting options may
    change; other fields that were asked for (`asked`, a set of field names such as the CLI's
    typed options; by default the fields that differ from TrainConfig's defaults) must match
    the checkpoint, and the corpus must give the same vocabulary.

    SIGINT (Ctrl-C) or SIGTERM while the loop runs finishes the current step, writes the
    checkpoint and raises `TrainingInterrupted`; the signal handlers in place before are
    restored on the way out, however training ends.
    """
    # paths are stored in the checkpoint's JSON, which has no Path type
    cfg = dataclasses.replace(cfg, **{n: str(getattr(cfg, n)) for n in ("corpus", "out")
                                      if isinstance(getattr(cfg, n), os.PathLike)})
    check_config(cfg)
    out_dir = pathlib.Path(cfg.out) if cfg.out else None
    ckpt_path = out_dir / "last.npz" if out_dir else None
    resumed = None
    if cfg.resume:
        if ckpt_path is None:
            raise ValueError("--resume needs --out, the directory that holds last.npz")
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        resumed = _read_run(ckpt_path, needs=("config", "vocab", "step", "position", "rng", "optimizer", "history"))
        cfg = _resume_config(cfg, resumed[2], ckpt_path, asked)
    if out_dir is not None:
        _prepare_out_dir(out_dir, log)

    text = load_corpus(cfg.corpus)
    corpus_sha256 = hashlib.sha256(text.encode()).hexdigest()
    vocab = Vocab.from_text(text, cfg.level, cfg.max_vocab)
    if resumed:
        saved_vocab, saved_sha = resumed[3], resumed[1].get("corpus_sha256")
        if vocab != saved_vocab:
            raise ValueError(f"--resume from {ckpt_path}: corpus {cfg.corpus or 'builtin'!r} gives a different "
                             f"vocabulary than the run was trained with ({_vocab_difference(saved_vocab, vocab)}). "
                             f"Resume on the same text, or train a new model into a new --out.")
        if saved_sha not in (None, corpus_sha256):
            log(f"note: corpus {cfg.corpus or 'builtin'!r} is not the text the checkpoint was trained on (same "
                f"vocabulary, other contents); training goes on, but will not match an uninterrupted run")
    ids = vocab.encode(text)
    train_ids, val_ids, _ = split(ids, cfg.val_frac)
    try:
        stream = BatchStream(train_ids, cfg.batch_size, cfg.seq_len, cfg.sampling, cfg.seed)
    except ValueError as e:
        raise ValueError(f"corpus {cfg.corpus or 'builtin'!r} has {len(ids)} tokens, {len(train_ids)} left for "
                         f"training after --val-frac {cfg.val_frac}: {e}. Use a longer text or a smaller "
                         f"--batch-size / --seq-len.") from e
    if cfg.eval_every and len(val_ids) < 2:
        log(f"note: the validation split has {len(val_ids)} token(s): no validation, so no checkpoint "
            f"before the end of training (raise --val-frac or use a longer text)")
    total_steps = cfg.steps if cfg.steps is not None else int(math.ceil(
        (cfg.epochs if cfg.epochs is not None else 1) * stream.batches_per_epoch))

    rng.manual_seed(cfg.seed)
    step, (epoch, index), state, history = 0, (0, 0), None, []
    if resumed:
        arrays, meta, _, _ = resumed
        model = _model_from_arrays(arrays, cfg, vocab, ckpt_path)
        opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
        _restore_optimizer(opt, arrays, meta["optimizer"], ckpt_path)
        try:
            rng.set_state(meta["rng"])
        except (KeyError, TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"checkpoint {str(ckpt_path)!r}: unusable RNG state: {e}") from e
        step, (epoch, index), history, state = _resume_state(meta, arrays, cfg, stream.batches_per_epoch, ckpt_path)
        log(f"resumed from {ckpt_path} at step {step}")
    else:
        model = CharRNN(len(vocab), cfg.hidden, cfg.layers, cfg.cell, cfg.embedding, cfg.dropout)
        opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    saved_at = None

    def checkpoint_now():
        nonlocal saved_at
        if ckpt_path is not None and saved_at != step:
            save_checkpoint(ckpt_path, model, opt, cfg, vocab, step, (epoch, index), state, history, corpus_sha256)
            saved_at = step

    model.train()
    tokens_per_step = cfg.batch_size * cfg.seq_len
    train_time, steps_timed, t_start = 0.0, 0, time.perf_counter()
    last_val = None
    with _StopRequests() as stop, blas_threads_for(cfg.hidden):
        while step < total_steps and stop.signum is None:  # the one place a stop request is honoured
            t0 = time.perf_counter()  # tokens/s counts training steps only, not evaluation or sampling
            x, y = stream.batch(epoch, index)
            if cfg.sampling == "random" or index == 0:
                state = None  # unrelated windows (or a new epoch offset): start from zeros
            logits, new_state = model(x, detach_state(state))
            loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
            loss_value = float(loss.item())
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"loss became {loss_value} at step {step + 1}; the last good checkpoint "
                                       f"({ckpt_path or 'none: pass --out'}) is kept. Lower --lr or set --clip-norm.")
            opt.zero_grad()
            loss.backward()
            params = list(model.parameters())
            if cfg.clip_value is not None:
                nn.utils.clip_grad_value_(params, cfg.clip_value)
            norm = nn.utils.clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm else float("inf")).item()
            if not math.isfinite(norm):
                raise TrainingDiverged(f"gradient norm became {norm} at step {step + 1}; the last good checkpoint "
                                       f"({ckpt_path or 'none: pass --out'}) is kept. Lower --lr or set --clip-norm.")
            opt.step()
            state = new_state
            step += 1
            index += 1
            if index == stream.batches_per_epoch:
                epoch, index = epoch + 1, 0
            steps_timed += 1
            train_time += time.perf_counter() - t0
            tok_s = steps_timed * tokens_per_step / train_time
            record = {"step": step, "loss": loss_value, "grad_norm": norm}
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == total_steps) and len(val_ids) > 1:
                last_val = evaluate(model, val_ids, cfg.batch_size, cfg.seq_len)
                record["val_nats"] = last_val["nats"]
                record["val_ppl"] = last_val["perplexity"]
            history.append(record)
            if progress is not None:
                progress(record, tok_s)
            if "val_ppl" in record:
                log(f"step {step}: val perplexity {record['val_ppl']:.3f} ({record['val_nats']:.4f} nats/token)")
                checkpoint_now()
            if cfg.sample_every and step % cfg.sample_every == 0:
                log("sample: " + json.dumps(sample(model, vocab, "\n", cfg.sample_len, seed=step)))
        checkpoint_now()  # still inside: a signal arriving during this write only sets the flag
    if stop.signum is not None:
        raise TrainingInterrupted(stop.signum, step, str(ckpt_path) if ckpt_path else None)
    return {"history": history, "val": last_val, "steps": step, "model": model, "vocab": vocab,
            "tokens_per_s": steps_timed * tokens_per_step / train_time if steps_timed else 0.0,
            "wall_s": time.perf_counter() - t_start, "checkpoint": str(ckpt_path) if ckpt_path else None}


_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads_for(hidden: int):
    """One BLAS thread for the small matrix products of a char-RNN step, unless the user chose.

    A step is hundreds of products of B x H by H x H. A multi-threaded BLAS hands each to a
    second thread that then has to get a core: on the 2-core dev machine, hidden 256, while
    other jobs ran, training went at 94k tokens/s with one thread and 11k with two (measured
    back to back). On an idle machine two threads are 10-20% faster there, which is not worth
    that risk; from hidden 512 up the products are big enough for threads to pay."""
    if hidden >= 512 or any(v in os.environ for v in _THREAD_VARIABLES):
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _prepare_out_dir(out_dir: pathlib.Path, log) -> None:
    """Fail before training, not at the first checkpoint hours later, if `out_dir` is unusable;
    and sweep away temporary files that a killed run left half-written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise ValueError(f"--out {str(out_dir)!r} is not a directory: {e}") from e
    removed = checkpoint.remove_stale_temporaries(out_dir / "last.npz")
    if removed:
        log(f"removed {len(removed)} unfinished checkpoint file(s) left by an interrupted write: "
            f"{', '.join(p.name for p in removed)}")
