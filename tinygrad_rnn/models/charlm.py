"""The character-level RNN language model: a recurrent layer over one-hot (or embedded)
tokens, a linear read-out, next-token cross-entropy. Training, evaluation (perplexity),
sampling and beam search live here too, so the CLI and Python users share one code path.

BPTT is not written anywhere: `nn.RNN`/`nn.LSTM`/`nn.GRU` loop a cell over time and
`loss.backward()` walks the graph that loop recorded.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
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

    `embedding=0` feeds one-hot vectors, as min-char-rnn and d2l do; `embedding=E` learns an
    E-dimensional embedding instead."""

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
        if self.embed is not None:
            x = self.embed(tokens)
        else:
            x = F.one_hot(tokens, self.vocab_size, dtype=self.head.weight.dtype)
        out, state = self.rnn(x, state)
        return self.head(self.drop(out)), state


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
def save_checkpoint(path, model, opt, cfg: TrainConfig, vocab: Vocab, step: int, position, state, history):
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_arrays, opt_meta = _split_optimizer_state(opt.state_dict())
    arrays.update(opt_arrays)
    arrays.update(_state_arrays(state))
    meta = {"config": dataclasses.asdict(cfg), "vocab": vocab.to_dict(), "step": step,
            "position": list(position), "rng": rng.get_state(), "optimizer": opt_meta,
            "history": history}
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


def load_model(path) -> tuple[CharRNN, Vocab, dict]:
    """A trained model, its vocabulary and the checkpoint's metadata."""
    arrays, meta = checkpoint.load(path)
    cfg = meta["config"]
    vocab = Vocab.from_dict(meta["vocab"])
    model = CharRNN(len(vocab), cfg["hidden"], cfg["layers"], cfg["cell"], cfg["embedding"], cfg["dropout"])
    model.load_state_dict({k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")})
    return model, vocab, meta


# ----------------------------------------------------------------------------- training
class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf."""


def train(cfg: TrainConfig, log=print, progress=None) -> dict:
    """Train per `cfg`; returns {"history": [...], "val": {...}, "steps", "tokens_per_s", ...}.

    With `cfg.out`, a checkpoint `last.npz` is written atomically at every evaluation and at
    the end; `cfg.resume` continues from it exactly (parameters, optimizer, RNG, data position
    and carried hidden state), so an interrupted run reproduces the uninterrupted loss curve.
    """
    out_dir = pathlib.Path(cfg.out) if cfg.out else None
    ckpt_path = out_dir / "last.npz" if out_dir else None
    resumed = None
    if cfg.resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        resumed = checkpoint.load(ckpt_path)
        saved_cfg = resumed[1]["config"]
        # the run's identity comes from the checkpoint; only the budget may change
        cfg = TrainConfig(**{**saved_cfg, "steps": cfg.steps, "epochs": cfg.epochs, "resume": True,
                             "out": cfg.out})

    text = load_corpus(cfg.corpus)
    vocab = Vocab.from_dict(resumed[1]["vocab"]) if resumed else Vocab.from_text(text, cfg.level, cfg.max_vocab)
    ids = vocab.encode(text)
    train_ids, val_ids, _ = split(ids, cfg.val_frac)
    stream = BatchStream(train_ids, cfg.batch_size, cfg.seq_len, cfg.sampling, cfg.seed)
    total_steps = cfg.steps if cfg.steps is not None else int(math.ceil((cfg.epochs or 1) * stream.batches_per_epoch))

    rng.manual_seed(cfg.seed)
    model = CharRNN(len(vocab), cfg.hidden, cfg.layers, cfg.cell, cfg.embedding, cfg.dropout)
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    step, (epoch, index), state, history = 0, (0, 0), None, []
    if resumed:
        arrays, meta = resumed
        model.load_state_dict({k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")})
        opt.load_state_dict(_join_optimizer_state(arrays, meta["optimizer"]))
        rng.set_state(meta["rng"])
        step, (epoch, index), history = meta["step"], meta["position"], meta["history"]
        state = _state_from_arrays(arrays, cfg.cell)
        log(f"resumed from {ckpt_path} at step {step}")

    def checkpoint_now():
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, model, opt, cfg, vocab, step, (epoch, index), state, history)

    model.train()
    tokens_per_step = cfg.batch_size * cfg.seq_len
    train_time, steps_timed, t_start = 0.0, 0, time.perf_counter()
    last_val = None
    while step < total_steps:
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
    checkpoint_now()
    return {"history": history, "val": last_val, "steps": step, "model": model, "vocab": vocab,
            "tokens_per_s": steps_timed * tokens_per_step / train_time if steps_timed else 0.0,
            "wall_s": time.perf_counter() - t_start, "checkpoint": str(ckpt_path) if ckpt_path else None}
