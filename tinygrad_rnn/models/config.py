"""TrainConfig, one field per training option, and the checks a config must pass before any
training starts or any checkpoint's config is trusted."""
from __future__ import annotations

import dataclasses
import os

from .. import optim
from .charlm import CELLS


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
    lr_schedule: str = "constant"   # or "cosine": lr down to min_lr over the run's steps
    min_lr: float = 0.0
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


# What a checkpoint's JSON may hold. Nothing in it is ever imported, called or evaluated, but
# a value of the wrong kind (a dict where a layer count belongs, a cell name we do not have)
# would otherwise surface steps later as a confusing crash, so each one is checked on load.
_JSON_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
_CHOICES = {"cell": tuple(CELLS), "level": ("char", "word"), "optimizer": ("sgd", "adagrad", "rmsprop", "adam"),
            "sampling": ("sequential", "random"), "lr_schedule": ("constant", "cosine")}
_AT_LEAST = {"hidden": 1, "layers": 1, "seq_len": 1, "batch_size": 1, "max_vocab": 1, "embedding": 0, "lr": 0, "min_lr": 0,
             "seed": 0, "steps": 0, "eval_every": 0, "sample_every": 0, "sample_len": 0, "clip_norm": 0,
             "clip_value": 0, "epochs": 0}


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


# ----------------------------------------------------------------------------- memory
GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per cell: one per gate
_OPTIMIZER_SLOTS = {"sgd": 0, "adagrad": 1, "rmsprop": 1, "adam": 2}  # per-parameter buffers


def estimate_bytes(cfg: TrainConfig, vocab_size: int) -> int:
    """About how much memory training `cfg` takes (float32): parameters with their gradients,
    optimizer buffers and the copy a checkpoint write makes, plus one step's activations
    (each layer's gates and states, and the logits with their softmax and gradient)."""
    g, H, V = GATES[cfg.cell], cfg.hidden, vocab_size
    first, later = cfg.embedding or V, H  # each layer's input size (one-hot: the vocabulary)
    params = g * H * (first + H + 2) + (cfg.layers - 1) * g * H * (later + H + 2) + V * H + V + V * cfg.embedding
    slots = _OPTIMIZER_SLOTS[cfg.optimizer]
    tokens = cfg.batch_size * cfg.seq_len
    activations = tokens * (cfg.layers * H * (g + 3) + 3 * V + cfg.embedding)
    return 4 * (params * (3 + 2 * slots) + activations)


def available_bytes() -> int | None:
    """Memory the system can give without swapping: MemAvailable on Linux, else the free
    physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str) -> None:
    """Refuse, before allocating anything, a job that needs more memory than is available:
    numpy would otherwise fail deep inside with a MemoryError, or the system would swap."""
    have = available_bytes()
    if have is not None and needed > have:
        raise ValueError(f"{what} needs about {needed / 1e9:,.1f} GB ({needed:,} bytes) of memory; this machine "
                         f"has {have / 1e9:,.1f} GB ({have:,} bytes) available")
