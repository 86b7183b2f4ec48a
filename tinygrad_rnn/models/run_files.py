"""What a training run keeps on disk: the checkpoint format (model, optimizer, RNG, data
position, carried state, history), every check a checkpoint passes before it is trusted, and
the checks that a resumed run is the run it claims to continue."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import socket
import time

import numpy as np

from .. import checkpoint, rng
from ..text import Vocab
from .charlm import CharRNN, _state_arrays, _state_from_arrays
from .config import TrainConfig, check_config


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


# Options that may differ when resuming: the budget, the corpus's path (its vocabulary is
# checked instead) and what is reported along the way. Every other field defines the run; a
# different value would silently train something else.
_RESUME_BUDGET = ("steps", "epochs", "out", "resume")
_RESUME_MAY_CHANGE = ("corpus", "eval_every", "sample_every", "sample_len")


def _resume_config(cfg: TrainConfig, saved: TrainConfig, path, asked=None) -> TrainConfig:
    """The checkpoint's config with the budget of `cfg` when it names one (steps or epochs not
    None), else the run's own budget: resuming continues the run it was, to the end it was
    given. The fields in `asked` (by default, those of `cfg` that differ from TrainConfig's
    defaults) count as asked for: a conflicting one is refused, naming it."""
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
    budget = _RESUME_BUDGET if cfg.steps is not None or cfg.epochs is not None else ("out", "resume")
    return dataclasses.replace(saved, **keep, **{n: getattr(cfg, n) for n in budget})


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
    if name == "initial_lr":  # set by an lr schedule (optim.LRScheduler), as in PyTorch; a number like lr
        fresh = {name: fresh["lr"]}
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
                if name == "step" and not (type(value) is int and value >= 0):
                    # Adam's bias correction divides by 1 - beta**step: 0 or less is no step count
                    raise ValueError(f"state 'step' is {value!r}, not a count of steps taken")
        opt.load_state_dict(sd)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: unusable optimizer state: "
                                         f"{type(e).__name__}: {e}") from e


def _restore_rng(state, path) -> None:
    """Set the framework's generator to a checkpoint's state, or say why it cannot be."""
    numbers = [state.get(k) for k in ("has_uint32", "uinteger")] if isinstance(state, dict) else []
    inner = state.get("state") if isinstance(state, dict) else None
    if isinstance(inner, dict):
        numbers += list(inner.values())
    bad = [n for n in numbers if not (type(n) is int and n >= 0)]
    try:
        if bad or not numbers:
            raise ValueError(f"its numbers must be whole and non-negative, got {bad[0] if bad else state!r}")
        rng.set_state(state)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: unusable RNG state: {e}") from e


LOCK_NAME = "lock"  # in --out: {"pid": ..., "host": ...} of the run holding the directory


@contextlib.contextmanager
def hold_out_dir(out_dir: pathlib.Path, log):
    """Hold `out_dir` for one training run: create it, take its lock file (refusing while
    another live run holds it), sweep away temporary files a killed run left half-written,
    and release the lock however the run ends.

    Fails before training, not at the first checkpoint hours later, if `out_dir` cannot be
    created or written: creating the lock file is the first write."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise ValueError(f"--out {str(out_dir)!r} is not a directory: {e}") from e
    except OSError as e:
        raise ValueError(f"--out {str(out_dir)!r} cannot be created: {e}") from e
    lock = out_dir / LOCK_NAME
    mine = _take_lock(lock, out_dir, log)
    try:
        # only now: the temporaries of a run still writing here would go too
        removed = checkpoint.remove_stale_temporaries(out_dir / "last.npz")
        if removed:
            log(f"removed {len(removed)} unfinished checkpoint file(s) left by an interrupted write: "
                f"{', '.join(p.name for p in removed)}")
        yield
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text() == mine:  # never remove a lock another run took over
                lock.unlink()


def _take_lock(lock: pathlib.Path, out_dir: pathlib.Path, log) -> str:
    """Create `lock` holding our pid and host; O_EXCL makes creation atomic, so of two runs
    starting together exactly one gets it. A lock whose pid is dead on this host is stale (a
    run killed by SIGKILL or a power cut) and is taken over. Returns what we wrote."""
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(100):  # a lock being written or removed by another run: look again shortly
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is None:
                time.sleep(0.02)
                continue
            pid, host, seen = owner
            if host != socket.gethostname() or _alive(pid):
                where = "" if host == socket.gethostname() else f" on host {host}"
                raise ValueError(f"--out {str(out_dir)!r} is in use by another training run (pid {pid}{where}, "
                                 f"lock file {lock}); wait for it to finish, use another --out, or delete the "
                                 f"lock file if that run is gone")
            # Unlinked only if it is still the stale lock we read: a run that took it over
            # meanwhile keeps its own (a window of microseconds remains between read and unlink)
            with contextlib.suppress(FileNotFoundError):
                if lock.read_text() == seen:
                    lock.unlink()
                    log(f"took over the lock in {out_dir}: its run (pid {pid}) is no longer running")
            continue
        except OSError as e:
            raise ValueError(f"--out {str(out_dir)!r} is not writable: {e}") from e
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        return mine
    raise ValueError(f"--out {str(out_dir)!r}: could not take the lock file {lock}: other runs keep taking it")


def _lock_owner(lock: pathlib.Path):
    """(pid, host, the file's text) from a lock file; None if it vanished or is being written
    (another run creates it, then fills it). One that still does not parse a second later was
    left by a run killed in between: it counts as held by a dead pid."""
    try:
        text, age = lock.read_text(), time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        d = json.loads(text)
        pid, host = d["pid"], d["host"]
        if type(pid) is int and pid > 0 and isinstance(host, str):
            return pid, host, text
    except (ValueError, KeyError, TypeError):
        pass
    return None if age < 1 else (0, socket.gethostname(), text)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True
