"""The training loop: batches, BPTT, clipping, the optimizer step, evaluation and checkpoints
at step boundaries, resuming exactly where a run stopped."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import sys
import time

from .. import nn, optim, rng
from ..nn import functional as F
from ..text import BatchStream, Vocab, load_corpus, split
# the model's names are looked up on charlm when used, so a test that swaps one there (to watch
# what each step keeps, say) reaches the loop
from . import charlm
from .config import TrainConfig, check_config, check_memory, estimate_bytes, make_optimizer
from .run_files import (_model_from_arrays, _read_run, _restore_optimizer, _restore_rng, _resume_config,
                        _resume_state, _vocab_difference, hold_out_dir, save_checkpoint)
from .sampling import sample
from .signals import TrainingInterrupted, _StopRequests


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf."""


def train(cfg: TrainConfig, log=print, progress=None, asked=None) -> dict:
    """Train per `cfg`; returns {"history": [...], "val": {...}, "steps", "tokens_per_s", ...}.

    With `cfg.out`, a checkpoint `last.npz` is written atomically at every evaluation and at
    the end, and the directory is held by a lock file for the run's whole life (a second run
    into it is refused, naming the first); a new run into a directory that already holds a
    checkpoint is refused too, so no run's checkpoint is ever replaced by another's.

    `cfg.resume` continues from the checkpoint exactly (parameters, optimizer, RNG, data
    position and carried hidden state), so an interrupted run reproduces the uninterrupted
    loss curve, up to the run's saved budget unless `cfg` names another (steps or epochs not
    None); a run already at its budget is left as it is and the result has `"complete": True`.
    On resume only the budget, the corpus path and the reporting options may change; other
    fields that were asked for (`asked`, a set of field names such as the CLI's typed options;
    by default the fields that differ from TrainConfig's defaults) must match the checkpoint,
    and the corpus must give the same vocabulary.

    A model that would not fit in the available memory is refused before anything is
    allocated. SIGINT (Ctrl-C) or SIGTERM while the loop runs finishes the current step,
    writes the checkpoint and raises `TrainingInterrupted`; the signal handlers in place
    before are restored on the way out, however training ends.
    """
    # paths are stored in the checkpoint's JSON, which has no Path type
    cfg = dataclasses.replace(cfg, **{n: str(getattr(cfg, n)) for n in ("corpus", "out")
                                      if isinstance(getattr(cfg, n), os.PathLike)})
    check_config(cfg)
    out_dir = pathlib.Path(cfg.out) if cfg.out else None
    if cfg.resume:
        if out_dir is None:
            raise ValueError("--resume needs --out, the directory that holds last.npz")
        if not (out_dir / "last.npz").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {out_dir / 'last.npz'}")
    if out_dir is None:
        return _train(cfg, None, log, progress, asked)
    with hold_out_dir(out_dir, log):
        if not cfg.resume and (out_dir / "last.npz").exists():
            # a new run would replace it at its first evaluation: the old run's work, gone
            raise ValueError(f"--out {str(out_dir)!r} already holds a run's checkpoint (last.npz); continue that run "
                             f"with --resume, or train into another --out (delete last.npz to start over there)")
        return _train(cfg, out_dir / "last.npz", log, progress, asked)


# A cross-entropy past this many nats a token has a perplexity beyond the largest float; a
# fresh model sits near log(vocabulary size), under 10. Only a diverged run gets there (--lr
# 1e30 gives 7e30 nats at step 2 while staying finite).
DIVERGED_NATS = math.log(sys.float_info.max)


def _train(cfg: TrainConfig, ckpt_path: pathlib.Path | None, log, progress, asked) -> dict:
    resumed = None
    if cfg.resume:
        resumed = _read_run(ckpt_path, needs=("config", "vocab", "step", "position", "rng", "optimizer", "history"))
        cfg = _resume_config(cfg, resumed[2], ckpt_path, asked)
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
    check_memory(estimate_bytes(cfg, len(vocab)), f"train: --hidden {cfg.hidden} --layers {cfg.layers} "
                 f"--embedding {cfg.embedding} --batch-size {cfg.batch_size} --seq-len {cfg.seq_len} (cell "
                 f"{cfg.cell}, {len(vocab)} tokens in the vocabulary)")
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
    step, (epoch, index), state, history, saved_at = 0, (0, 0), None, [], None
    if resumed:
        arrays, meta, _, _ = resumed
        model = _model_from_arrays(arrays, cfg, vocab, ckpt_path)
        opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
        _restore_optimizer(opt, arrays, meta["optimizer"], ckpt_path)
        _restore_rng(meta["rng"], ckpt_path)
        step, (epoch, index), history, state = _resume_state(meta, arrays, cfg, stream.batches_per_epoch, ckpt_path)
        saved_at = step
        if step >= total_steps:
            budget = f"--steps {cfg.steps}" if cfg.steps is not None else f"--epochs {cfg.epochs or 1}"
            reached = f"step {step} of {total_steps}" if step == total_steps else f"step {step}, past {total_steps}"
            log(f"the run in {ckpt_path.parent} is already complete: {reached} ({budget}); nothing was trained. To "
                f"train further, give it a larger budget: --resume --steps N, with N over {step}")
            return {"history": history, "val": None, "steps": step, "model": model, "vocab": vocab,
                    "tokens_per_s": 0.0, "wall_s": 0.0, "checkpoint": str(ckpt_path), "complete": True}
        log(f"resumed from {ckpt_path} at step {step} of {total_steps}")
    else:
        model = charlm.CharRNN(len(vocab), cfg.hidden, cfg.layers, cfg.cell, cfg.embedding, cfg.dropout)
        opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)

    schedule = None
    if cfg.lr_schedule == "cosine":
        # the lr follows the step count alone (optim.CosineAnnealingLR's closed form): a resumed
        # run gets the lrs of an unbroken one
        for group in opt.param_groups:
            group["initial_lr"] = cfg.lr
        schedule = optim.CosineAnnealingLR(opt, max(total_steps, 1), cfg.min_lr, last_epoch=step - 1)

    def checkpoint_now():
        nonlocal saved_at
        if ckpt_path is not None and saved_at != step:
            save_checkpoint(ckpt_path, model, opt, cfg, vocab, step, (epoch, index), state, history, corpus_sha256)
            saved_at = step

    def diverged(what):
        if ckpt_path is None:
            kept = "nothing was saved (no --out)"
        elif saved_at is None:
            first = f"at step {cfg.eval_every}" if cfg.eval_every else "at the end of training"
            kept = f"no checkpoint was written (the first comes {first})"
        else:
            kept = f"the last good checkpoint ({ckpt_path}, step {saved_at}) is kept"
        return TrainingDiverged(f"{what} at step {step + 1}; {kept}. Lower --lr or set --clip-norm.")

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
            logits, new_state = model(x, charlm.detach_state(state))
            loss = F.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
            loss_value = float(loss.item())
            if not loss_value <= DIVERGED_NATS:
                raise diverged(f"loss became {loss_value:.4g}" + " nats a token" * math.isfinite(loss_value))
            opt.zero_grad()
            loss.backward()
            params = list(model.parameters())
            if cfg.clip_value:  # 0 is off, as for clip_norm: clipping every gradient to 0 would train nothing
                nn.utils.clip_grad_value_(params, cfg.clip_value)
            norm = nn.utils.clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm else float("inf")).item()
            if not math.isfinite(norm):
                raise diverged(f"gradient norm became {norm}")
            opt.step()
            if schedule is not None:
                schedule.step()
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
                last_val = charlm.evaluate(model, val_ids, cfg.batch_size, cfg.seq_len)
                record["val_nats"] = last_val["nats"]
                record["val_ppl"] = last_val["perplexity"]
            history.append(record)
            if progress is not None:
                progress(record, tok_s)
            if "val_ppl" in record:
                log(f"step {step}: val perplexity {record['val_ppl']:.3f} ({record['val_nats']:.4f} nats/token)")
                checkpoint_now()
            if cfg.sample_every and step % cfg.sample_every == 0:
                log("sample: " + json.dumps(sample(model, vocab, None, cfg.sample_len, seed=step)))
        checkpoint_now()  # still inside: a signal arriving during this write only sets the flag
    if stop.signum is not None:
        raise TrainingInterrupted(stop.signum, step, str(ckpt_path) if ckpt_path else None)
    return {"history": history, "val": last_val, "steps": step, "model": model, "vocab": vocab,
            "tokens_per_s": steps_timed * tokens_per_step / train_time if steps_timed else 0.0,
            "wall_s": time.perf_counter() - t_start, "checkpoint": str(ckpt_path) if ckpt_path else None,
            "complete": False}


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
