"""Issue 23, items 1, 4, 8 and 10: what a run keeps in --out. --resume continues to the run's own
step budget; one run at a time holds a directory (a lock file with its pid); an --out that
cannot be written is refused before any training; corrupt numbers in the resume state are a
checkpoint error. The CLI runs in-process (`cli.main`) except where a second process is the
point."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import cli_support
from cli_support import run, write_corpus
from tinygrad_rnn import checkpoint
from tinygrad_rnn.models import charlm

TINY = cli_support.TINY + ["--seed", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory)


def saved_step(out) -> int:
    return charlm.load_model(pathlib.Path(out) / "last.npz")[2]["step"]


def saved_budget(out) -> int:
    return charlm.load_model(pathlib.Path(out) / "last.npz")[2]["config"]["steps"]


def interrupt_at(step):
    def progress(record, tok_s):
        if record["step"] == step:
            signal.raise_signal(signal.SIGINT)
    return progress


# ----------------------------------------------------------------------------- item 1: the budget
def test_resume_after_ctrl_c_continues_to_the_runs_own_budget(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = charlm.TrainConfig(corpus=corpus, out=str(out), steps=15, eval_every=5, hidden=16, seq_len=8,
                             batch_size=4, seed=1)
    with pytest.raises(charlm.TrainingInterrupted):
        charlm.train(cfg, log=lambda m: None, progress=interrupt_at(7))
    assert saved_step(out) == 7
    code, _, err = run(capsys, "train", "--out", out, "--resume", "--no-progress")  # what the message says to do
    assert code == 0, err
    assert "resumed from" in err and "at step 7 of 15" in err
    assert saved_step(out) == 15 and saved_budget(out) == 15  # not the CLI's 1,000, and the budget kept


def test_resume_of_a_finished_run_says_so_and_changes_nothing(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "--corpus", corpus, "--steps", "6", "--eval-every", "3", "--out", out, *TINY)[0] == 0
    before = (out / "last.npz").read_bytes()
    code, stdout, err = run(capsys, "train", "--out", out, "--resume", "--no-progress")
    assert code == 0 and stdout == ""
    assert err == (f"the run in {out} is already complete: step 6 of 6 (--steps 6); nothing was trained. To train "
                   f"further, give it a larger budget: --resume --steps N, with N over 6\n")
    assert (out / "last.npz").read_bytes() == before
    code, stdout, _ = run(capsys, "train", "--out", out, "--resume", "--steps", "4", "--json")
    assert code == 0 and json.loads(stdout)["already_complete"] is True
    code, _, err = run(capsys, "train", "--out", out, "--resume", "--steps", "4", "--no-progress")
    assert code == 0 and "is already complete: step 6, past 4 (--steps 4); nothing was trained." in err
    assert (out / "last.npz").read_bytes() == before
    code, _, err = run(capsys, "train", "--out", out, "--resume", "--steps", "9", "--no-progress")
    assert code == 0, err
    assert saved_step(out) == 9 and saved_budget(out) == 9  # a new budget, given, is the run's from now on


# ----------------------------------------------------------------------------- item 4: one run per --out
def lock_of(out) -> dict:
    return json.loads((pathlib.Path(out) / "lock").read_text())


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_second_run_is_refused_while_the_first_holds_the_directory(corpus, tmp_path, capsys, live_pid):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.npz").write_bytes(b"the first run's checkpoint")
    (out / "last.npz.0123456789ab.tmp").write_bytes(b"the first run's write in progress")
    (out / "lock").write_text(json.dumps({"pid": live_pid, "host": socket.gethostname()}))
    code, stdout, err = run(capsys, "train", "--corpus", corpus, "--steps", "3", "--out", out, *TINY)
    assert (code, stdout) == (2, "")
    assert err == (f"error: --out '{out}' is in use by another training run (pid {live_pid}, lock file {out}/lock); "
                   f"wait for it to finish, use another --out, or delete the lock file if that run is gone\n")
    assert (out / "last.npz").read_bytes() == b"the first run's checkpoint"  # nothing of the first run touched
    assert (out / "last.npz.0123456789ab.tmp").read_bytes() == b"the first run's write in progress"
    assert lock_of(out)["pid"] == live_pid
    code, _, err = run(capsys, "train", "--out", out, "--resume", "--no-progress")
    assert code == 2 and f"pid {live_pid}" in err


def test_a_lock_from_another_host_is_refused_naming_the_host(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "lock").write_text(json.dumps({"pid": 4242, "host": "elsewhere.example"}))
    code, _, err = run(capsys, "train", "--corpus", corpus, "--steps", "3", "--out", out, *TINY)
    assert code == 2 and "(pid 4242 on host elsewhere.example," in err


def test_two_real_runs_into_one_directory(corpus, tmp_path, capsys):
    """A training process holds --out; a second run is refused naming its pid; the first, then
    stopped with Ctrl-C, still writes its checkpoint and releases the lock."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "tinygrad_rnn.cli", "train", "--corpus", corpus, "--steps",
                              "100000", "--eval-every", "5", "--out", str(out), *TINY],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.npz").exists():  # its first checkpoint: training is under way
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        code, _, err = run(capsys, "train", "--corpus", corpus, "--steps", "3", "--out", out, *TINY)
        assert code == 2 and f"in use by another training run (pid {first.pid}," in err
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130, stderr
    assert saved_step(out) >= 5 and sorted(p.name for p in out.iterdir()) == ["last.npz"]


def test_a_stale_lock_is_taken_over_with_a_message(corpus, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / "lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    logs = []
    charlm.train(charlm.TrainConfig(corpus=corpus, out=str(out), steps=2, hidden=16, seq_len=8, batch_size=4),
                 log=logs.append)
    assert f"took over the lock in {out}: its run (pid {dead.pid}) is no longer running" in logs
    assert not (out / "lock").exists()


def test_a_lock_that_never_got_its_contents_is_taken_over_once_old(corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "lock").write_text("")  # a run killed between creating the lock and writing its pid
    os.utime(out / "lock", (time.time() - 10, time.time() - 10))
    logs = []
    charlm.train(charlm.TrainConfig(corpus=corpus, out=str(out), steps=1, hidden=8, seq_len=8, batch_size=4),
                 log=logs.append)
    assert any(m.startswith(f"took over the lock in {out}") for m in logs), logs


def test_of_many_runs_starting_together_exactly_one_gets_the_directory(tmp_path):
    from tinygrad_rnn.models import run_files

    out, start, release = tmp_path / "run", threading.Barrier(8), threading.Event()
    got, refused = [], []

    def contend():
        start.wait()
        try:
            with run_files.hold_out_dir(out, log=lambda m: None):
                got.append(1)
                release.wait(10)
        except ValueError as e:
            refused.append(str(e))
    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(refused) < 7 and time.monotonic() < deadline:  # the losers give up while the winner holds it
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join()
    assert len(got) == 1 and len(refused) == 7 and all("in use by another training run" in e for e in refused)
    assert not (out / "lock").exists()


def test_the_lock_holds_our_pid_while_training_and_is_released_however_training_ends(corpus, tmp_path):
    out = tmp_path / "run"
    seen = []
    cfg = charlm.TrainConfig(corpus=corpus, out=str(out), steps=3, hidden=16, seq_len=8, batch_size=4)
    charlm.train(cfg, log=lambda m: None, progress=lambda r, t: seen.append(lock_of(out)))
    assert seen[0] == {"pid": os.getpid(), "host": socket.gethostname()}
    assert not (out / "lock").exists()  # normal end
    with pytest.raises(charlm.TrainingInterrupted):
        charlm.train(charlm.TrainConfig(**{**vars(cfg), "steps": 9, "resume": True}), log=lambda m: None,
                     progress=interrupt_at(5))
    assert not (out / "lock").exists()  # SIGINT
    with pytest.raises(ValueError, match="other settings than you asked for"):
        charlm.train(charlm.TrainConfig(**{**vars(cfg), "resume": True, "hidden": 32}), log=lambda m: None)
    assert not (out / "lock").exists()  # an error

    def crash(record, tok_s):
        raise RuntimeError("a bug in a progress callback")
    with pytest.raises(RuntimeError):
        charlm.train(charlm.TrainConfig(**{**vars(cfg), "out": str(tmp_path / "other")}), log=lambda m: None,
                     progress=crash)
    assert not (tmp_path / "other" / "lock").exists()


def test_sigterm_releases_the_lock(corpus, tmp_path):
    out = tmp_path / "run"
    cfg = charlm.TrainConfig(corpus=corpus, out=str(out), steps=9, hidden=16, seq_len=8, batch_size=4)

    def term(record, tok_s):
        if record["step"] == 2:
            signal.raise_signal(signal.SIGTERM)
    with pytest.raises(charlm.TrainingInterrupted):
        charlm.train(cfg, log=lambda m: None, progress=term)
    assert sorted(p.name for p in out.iterdir()) == ["last.npz"]


def test_a_new_run_never_replaces_another_runs_checkpoint(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "--corpus", corpus, "--steps", "3", "--out", out, *TINY)[0] == 0
    before = (out / "last.npz").read_bytes()
    code, _, err = run(capsys, "train", "--corpus", corpus, "--steps", "3", "--hidden", "8", "--out", out,
                       "--no-progress")
    assert code == 2 and err == (f"error: --out '{out}' already holds a run's checkpoint (last.npz); continue that "
                                 f"run with --resume, or train into another --out (delete last.npz to start over "
                                 f"there)\n")
    assert (out / "last.npz").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["last.npz"]


# ----------------------------------------------------------------------------- item 8: unwritable --out
def test_an_out_that_cannot_be_written_is_refused_before_training(corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "read_only"
    out.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: the write that fails is made to fail
        real_open = os.open

        def refuse(path, flags, *args, **kw):
            if pathlib.Path(path).parent == out:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kw)
        monkeypatch.setattr(os, "open", refuse)
    else:
        out.chmod(0o500)
    t0 = time.perf_counter()
    code, _, err = run(capsys, "train", "--corpus", corpus, "--steps", "100000", "--out", out, *TINY)
    assert code == 2 and time.perf_counter() - t0 < 30  # not after 100,000 steps
    assert err == f"error: --out '{out}' is not writable: [Errno 13] Permission denied: '{out}/lock'\n"


@pytest.mark.skipif(not pathlib.Path("/sys").is_dir(), reason="needs Linux's /sys, where mkdir is refused")
@pytest.mark.parametrize("argv", [
    ["train", "--steps", "3", "--out", "/sys/tinygrad_rnn_test/run", *TINY],
    ["graph", "--out", "/sys/tinygrad_rnn_test/g"],
], ids=["train", "graph"])
def test_an_out_that_cannot_be_created_is_one_line(corpus, capsys, argv):
    code, stdout, err = run(capsys, *argv[:1], "--corpus", corpus, *argv[1:]) if argv[0] == "train" \
        else run(capsys, *argv)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "/sys/tinygrad_rnn_test" in err, err


def test_viz_hidden_into_an_uncreatable_directory_is_one_line(corpus, tmp_path, capsys):
    charlm.train(charlm.TrainConfig(corpus=corpus, out=str(tmp_path), steps=2, hidden=8, seq_len=8, batch_size=4),
                 log=lambda m: None)
    (tmp_path / "file").write_text("x")
    code, stdout, err = run(capsys, "viz", "hidden", "--checkpoint", tmp_path / "last.npz", "--text", "the text",
                            "--out", tmp_path / "file" / "sub" / "h.png")
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "file/sub" in err, err


def test_viz_curve_draws_a_runs_losses_and_names_its_best_validation(corpus, tmp_path, capsys):
    charlm.train(charlm.TrainConfig(corpus=corpus, out=str(tmp_path), steps=6, eval_every=3, hidden=8, seq_len=8,
                                    batch_size=4), log=lambda m: None)
    history = charlm.load_model(tmp_path / "last.npz")[2]["history"]
    best = min((r["val_nats"], r["step"]) for r in history if "val_nats" in r)
    code, stdout, err = run(capsys, "viz", "curve", "--checkpoint", tmp_path / "last.npz", "--out", tmp_path / "c")
    assert code == 0, err
    assert stdout == f"wrote {tmp_path / 'c.png'}: 6 steps, best validation {best[0]:.4f} nats at step {best[1]}\n"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- item 10: corrupt numbers
@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    charlm.train(charlm.TrainConfig(corpus=corpus, out=str(out), steps=4, eval_every=2, hidden=16, seq_len=8,
                                    batch_size=4), log=lambda m: None)
    return checkpoint.load(out / "last.npz")


@pytest.mark.parametrize("edit,says", [
    (lambda m: m["optimizer"]["state"]["0"]["step"].update(value=-5),
     "unusable optimizer state: ValueError: state 'step' is -5, not a count of steps taken"),
    (lambda m: m["optimizer"]["state"]["0"]["step"].update(value=2.5),
     "unusable optimizer state: ValueError: state 'step' is 2.5, not a count of steps taken"),
    (lambda m: m["rng"]["state"].update(state=-1),
     "unusable RNG state: its numbers must be whole and non-negative, got -1"),
    (lambda m: m["rng"].update(uinteger=-7), "unusable RNG state: its numbers must be whole and non-negative, got -7"),
    (lambda m: m["rng"]["state"].update(inc=2 ** 200), "unusable RNG state: "),
], ids=["negative-step", "fractional-step", "negative-rng", "negative-uinteger", "huge-rng"])
def test_corrupt_numbers_in_the_resume_state_are_a_checkpoint_error(tmp_path, trained, capsys, edit, says):
    arrays, meta = trained
    meta = json.loads(json.dumps(meta))
    edit(meta)
    checkpoint.save(tmp_path / "last.npz", arrays, meta)
    before = (tmp_path / "last.npz").read_bytes()
    code, _, err = run(capsys, "train", "--out", tmp_path, "--resume", "--steps", "9", "--no-progress")
    assert code == 2 and err.startswith(f"error: checkpoint '{tmp_path}/last.npz': {says}"), err
    assert err.count("\n") == 1 and (tmp_path / "last.npz").read_bytes() == before
