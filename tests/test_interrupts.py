"""Training never loses work: SIGINT/SIGTERM stop it at a step boundary with a checkpoint that
resumes to the uninterrupted loss curve, and SIGKILL at any moment leaves a loadable checkpoint.

The end-to-end tests run the real CLI in a subprocess on a tiny model and corpus; the signal is
sent once the run reports progress, so it always lands inside the training loop."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from tinygrad_rnn import checkpoint
from tinygrad_rnn.models import charlm
from tinygrad_rnn.text import builtin_text

STEPS = 240  # the interrupted runs are signalled near step 20, far from their end
TINY = ["--hidden", "16", "--seq-len", "8", "--batch-size", "4", "--seed", "1"]
TIMEOUT = 120


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(builtin_text()[:4000], encoding="utf-8")
    return str(path)


def _cli(*args):
    return [sys.executable, "-m", "tinygrad_rnn.cli", "train", *args]


def _run(*args):
    r = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return r


class _Training:
    """A CLI training run in the background whose stderr is read as it comes."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(_cli(*args, "--no-progress"), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines, self.progress = [], threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("step "):
                self.progress.set()

    def wait_for_progress(self):
        assert self.progress.wait(TIMEOUT), "no progress line:\n" + "".join(self.lines)

    def finish(self):
        code = self.proc.wait(TIMEOUT)
        self.reader.join(TIMEOUT)
        return code, "".join(self.lines)


def _curve(out_dir):
    """(step, loss, grad_norm) of every step the run in `out_dir` has done, from its checkpoint."""
    _, meta = checkpoint.load(out_dir / "last.npz")
    return [(r["step"], r["loss"], r["grad_norm"]) for r in meta["history"]]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    r = _run("--corpus", corpus, *TINY, "--steps", str(STEPS), "--eval-every", "20", "--out", str(out), "--json")
    return json.loads(r.stdout.splitlines()[-1]), _curve(out)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_a_checkpoint_and_resume_matches_the_uninterrupted_run(corpus, tmp_path, uninterrupted, sig,
                                                                            code):
    out = tmp_path / "run"
    run = _Training("--corpus", corpus, *TINY, "--steps", str(STEPS), "--eval-every", "20", "--out", str(out))
    run.wait_for_progress()
    run.proc.send_signal(sig)
    returncode, stderr = run.finish()
    assert returncode == code, stderr
    stopped = charlm.load_model(out / "last.npz")[2]["step"]
    assert 20 <= stopped < STEPS  # really stopped early, and only at a step boundary it reports:
    assert f"{sig.name}: training stopped after step {stopped}; checkpoint {out / 'last.npz'} holds step " \
           f"{stopped}; continue with --resume" in stderr
    assert "Traceback" not in stderr
    r = _run("--out", str(out), "--resume", "--steps", str(STEPS), "--json")
    full_summary, full_curve = uninterrupted
    summary = json.loads(r.stdout.splitlines()[-1])
    assert (summary["train_loss"], summary["val_loss"]) == (full_summary["train_loss"], full_summary["val_loss"])
    assert _curve(out) == full_curve  # every step's loss and gradient norm, exactly


def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(corpus, tmp_path, uninterrupted):
    """Five SIGKILLs while a checkpoint is written after every step; each restart resumes from
    whatever the last one left. The surviving file always loads, and the runs joined together
    still give the uninterrupted loss curve."""
    out = tmp_path / "run"
    gen = random.Random(7)
    first = ["--corpus", corpus, *TINY]
    for attempt in range(5):
        run = _Training(*(first if attempt == 0 else ["--resume"]), "--steps", str(STEPS), "--eval-every", "1",
                        "--out", str(out))
        run.wait_for_progress()
        time.sleep(gen.uniform(0, 0.3))
        run.proc.send_signal(signal.SIGKILL)
        returncode, stderr = run.finish()
        assert returncode == -signal.SIGKILL, stderr
        model, vocab, meta = charlm.load_model(out / "last.npz")  # never half-written
        assert 1 <= meta["step"] < STEPS and model.vocab_size == len(vocab)
    r = _run("--out", str(out), "--resume", "--steps", str(STEPS), "--json")
    assert sorted(p.name for p in out.iterdir()) == ["last.npz"]  # stale temporaries were swept away
    assert json.loads(r.stdout.splitlines()[-1])["train_loss"] == uninterrupted[0]["train_loss"]
    assert _curve(out) == uninterrupted[1]


_KILL_MID_WRITE = textwrap.dedent("""
    import io, os, signal, sys
    import numpy as np
    from tinygrad_rnn.models import charlm

    real_savez, calls = np.savez, []

    def savez(f, **arrays):  # the second checkpoint dies halfway through its bytes
        calls.append(1)
        if len(calls) < 2:
            return real_savez(f, **arrays)
        buf = io.BytesIO()
        real_savez(buf, **arrays)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    np.savez = savez
    charlm.train(charlm.TrainConfig(corpus=sys.argv[1], out=sys.argv[2], steps=20, eval_every=10, hidden=16,
                                    seq_len=8, batch_size=4, seed=1), log=lambda m: None)
""")


def test_a_write_killed_halfway_leaves_the_previous_checkpoint_and_a_temporary_that_resume_removes(corpus, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, corpus, str(out)], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == -signal.SIGKILL, r.stderr
    torn = [p for p in out.iterdir() if p.name not in ("last.npz", "lock")]
    assert len(torn) == 1 and torn[0].name.startswith("last.npz.") and torn[0].name.endswith(".tmp")
    assert (out / "lock").is_file()  # the killed run's, naming its dead pid
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(torn[0])  # the torn bytes exist, but never under the checkpoint's name
    assert charlm.load_model(out / "last.npz")[2]["step"] == 10
    logs = []
    cfg = dict(corpus=corpus, steps=20, eval_every=10, hidden=16, seq_len=8, batch_size=4, seed=1)
    resumed = charlm.train(charlm.TrainConfig(out=str(out), resume=True, **cfg), log=logs.append)
    assert any("removed 1 unfinished checkpoint file" in m for m in logs), logs
    assert any(m.startswith(f"took over the lock in {out}: its run (pid ") for m in logs), logs
    assert sorted(p.name for p in out.iterdir()) == ["last.npz"]  # the lock released at the end
    full = charlm.train(charlm.TrainConfig(**cfg), log=lambda m: None)
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]


# ----------------------------------------------------------------------------- in-process mechanics
def _tiny_cfg(corpus, out=None, **kw):
    return charlm.TrainConfig(**{**dict(corpus=corpus, out=str(out) if out else None, steps=30, eval_every=5, hidden=16, seq_len=8,
                                        batch_size=4, seed=1), **kw})


def _signal_at(step, *signals):
    def progress(record, tok_s):
        if record["step"] == step:
            for sig in signals:
                signal.raise_signal(sig)
    return progress


def test_the_handler_only_flags_and_the_loop_stops_after_the_step_in_progress(corpus, tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(charlm.TrainingInterrupted) as info:
        charlm.train(_tiny_cfg(corpus, tmp_path), log=lambda m: None, progress=_signal_at(7, signal.SIGTERM))
    e = info.value
    assert (e.signum, e.step, e.exit_code, e.checkpoint) == (signal.SIGTERM, 7, 143, str(tmp_path / "last.npz"))
    assert isinstance(e, KeyboardInterrupt)  # an `except Exception` cannot swallow a request to stop
    _, meta = checkpoint.load(tmp_path / "last.npz")
    assert meta["step"] == 7 and len(meta["history"]) == 7
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_second_signal_stops_at_once_and_keeps_the_last_complete_checkpoint(corpus, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT") as info:
        charlm.train(_tiny_cfg(corpus, tmp_path), log=lambda m: None,
                     progress=_signal_at(7, signal.SIGINT, signal.SIGINT))
    assert not isinstance(info.value, charlm.TrainingInterrupted)
    assert charlm.load_model(tmp_path / "last.npz")[2]["step"] == 5  # the evaluation checkpoint before
    assert signal.getsignal(signal.SIGINT) is before


def test_an_ignored_signal_stays_ignored(corpus, tmp_path):
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as under nohup
    try:
        res = charlm.train(_tiny_cfg(corpus, tmp_path, steps=10), log=lambda m: None,
                           progress=_signal_at(3, signal.SIGTERM))
        assert res["steps"] == 10 and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_training_in_a_worker_thread_runs_without_touching_signal_handlers(corpus, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    seen, result = [], {}

    def progress(record, tok_s):
        seen.append(signal.getsignal(signal.SIGINT))

    def work():
        result.update(charlm.train(_tiny_cfg(corpus, tmp_path, steps=5), log=lambda m: None, progress=progress))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(TIMEOUT)
    assert result["steps"] == 5 and seen == [before] * 5


def test_interrupt_without_out_says_that_nothing_was_saved(corpus):
    with pytest.raises(charlm.TrainingInterrupted, match="nothing was saved: pass --out"):
        charlm.train(_tiny_cfg(corpus), log=lambda m: None, progress=_signal_at(2, signal.SIGINT))


def test_checkpoint_files_get_the_users_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = checkpoint.save(tmp_path / "c.npz", {"w": np.ones(2)}, {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
