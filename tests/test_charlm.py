"""The char-RNN language model: learning, exact resume, checkpoints, sampling, beam search, CLI."""
import itertools
import json
import math
import signal
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import checkpoint
from tinygrad_rnn.models import charlm
from tinygrad_rnn.models.charlm import CharRNN, TrainConfig
from tinygrad_rnn.text import Vocab, builtin_text


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(builtin_text()[:30_000], encoding="utf-8")
    return str(path)


def _cfg(corpus, out=None, **kw):
    base = dict(corpus=corpus, hidden=48, seq_len=24, batch_size=16, steps=30, eval_every=10,
                lr=3e-3, out=out, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_training_drives_validation_perplexity_far_below_uniform(small_corpus):
    res = charlm.train(_cfg(small_corpus, steps=300, eval_every=300, hidden=64), log=lambda m: None)
    val = res["val"]
    # uniform guessing over the ~90-symbol vocabulary has perplexity ~90; a learned model
    # of English-like text gets well under a fifth of that
    assert val["uniform_perplexity"] > 60
    assert val["perplexity"] < 0.2 * val["uniform_perplexity"], val
    assert val["bits"] == pytest.approx(val["nats"] / math.log(2))


@pytest.mark.parametrize("cell,sampling,dropout", [("rnn", "sequential", 0.0), ("lstm", "random", 0.0),
                                                   ("gru", "sequential", 0.2)])
def test_interrupted_then_resumed_run_reproduces_the_loss_curve_exactly(small_corpus, tmp_path, cell, sampling, dropout):
    kw = dict(cell=cell, sampling=sampling, dropout=dropout, layers=2 if dropout else 1)
    full = charlm.train(_cfg(small_corpus, str(tmp_path / "full"), **kw), log=lambda m: None)
    charlm.train(_cfg(small_corpus, str(tmp_path / "cut"), steps=20, **kw), log=lambda m: None)
    resumed = charlm.train(_cfg(small_corpus, str(tmp_path / "cut"), resume=True, **kw), log=lambda m: None)
    a = [(r["step"], r["loss"], r["grad_norm"]) for r in full["history"]]
    b = [(r["step"], r["loss"], r["grad_norm"]) for r in resumed["history"]]
    assert a == b  # exact equality, not approximate


def test_cosine_schedule_takes_the_lr_down_to_min_lr_over_the_run(small_corpus, monkeypatch):
    lrs = []
    original = tg.optim.Adam.step

    def step(self):
        lrs.append(self.param_groups[0]["lr"])
        original(self)

    monkeypatch.setattr(tg.optim.Adam, "step", step)
    charlm.train(_cfg(small_corpus, steps=9, eval_every=0, lr=0.01, lr_schedule="cosine", min_lr=0.001),
                 log=lambda m: None)
    want = [0.001 + 0.009 * (1 + math.cos(math.pi * s / 9)) / 2 for s in range(9)]
    assert lrs == pytest.approx(want, rel=1e-12) and lrs[-1] > 0.001  # the last step's lr is the one before min_lr


def test_a_cosine_run_stopped_by_ctrl_c_resumes_onto_the_same_lrs_and_losses(small_corpus, tmp_path):
    # the schedule spans the run's budget, so the interrupted run must have the full one
    kw = dict(cell="lstm", dropout=0.2, layers=2, lr_schedule="cosine", min_lr=1e-4)
    full = charlm.train(_cfg(small_corpus, str(tmp_path / "full"), **kw), log=lambda m: None)

    def ctrl_c_at_20(record, tok_s):
        if record["step"] == 20:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(charlm.TrainingInterrupted):
        charlm.train(_cfg(small_corpus, str(tmp_path / "cut"), **kw), log=lambda m: None, progress=ctrl_c_at_20)
    resumed = charlm.train(_cfg(small_corpus, str(tmp_path / "cut"), resume=True, **kw), log=lambda m: None)
    a = [(r["step"], r["loss"], r["grad_norm"]) for r in full["history"]]
    b = [(r["step"], r["loss"], r["grad_norm"]) for r in resumed["history"]]
    assert len(a) == 30 and a == b  # exact equality, not approximate


def test_checkpoint_holds_everything_needed(small_corpus, tmp_path):
    charlm.train(_cfg(small_corpus, str(tmp_path), steps=10), log=lambda m: None)
    arrays, meta = checkpoint.load(tmp_path / "last.npz")
    assert {"config", "vocab", "step", "position", "rng", "optimizer", "history"} <= meta.keys()
    assert meta["step"] == 10 and meta["config"]["hidden"] == 48
    assert any(k.startswith("model.rnn.weight_hh_l0") for k in arrays)
    assert any(k.startswith("optim.") for k in arrays) and "state.0" in arrays
    model, vocab, _ = charlm.load_model(tmp_path / "last.npz")
    assert isinstance(vocab, Vocab) and model.vocab_size == len(vocab)


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(small_corpus, tmp_path):
    cfg = _cfg(small_corpus, str(tmp_path), steps=10, eval_every=5)
    charlm.train(cfg, log=lambda m: None)
    good = (tmp_path / "last.npz").read_bytes()
    poisoned = _cfg(small_corpus, str(tmp_path), steps=30, eval_every=5, resume=True)
    original_step = tg.optim.Adam.step

    def nan_step(self, *a, **k):  # poison the parameters as a blown-up update would
        for group in self.param_groups:
            for p in group["params"]:
                p.data[...] = np.nan

    tg.optim.Adam.step = nan_step
    try:
        with pytest.raises(charlm.TrainingDiverged, match="kept"):
            charlm.train(poisoned, log=lambda m: None)
    finally:
        tg.optim.Adam.step = original_step
    assert (tmp_path / "last.npz").read_bytes() == good


def _tiny_model(V=3, H=4, seed=0):
    tg.manual_seed(seed)
    model = CharRNN(V, H, cell="rnn")
    for p in model.parameters():  # larger weights make the distribution far from uniform
        p.data *= 3
    return model, Vocab(["a", "b", "c"][:V])


def _seq_logprob(model, vocab, prime, tokens):
    with tg.no_grad():
        ids = np.concatenate([vocab.encode(prime), np.asarray(tokens, dtype=np.int64)])
        logits, _ = model(ids[None, :])
        lp = logits.log_softmax(-1).data[0].astype(np.float64)
    start = len(prime) - 1
    return sum(lp[start + i, t] for i, t in enumerate(tokens))


def test_beam_search_with_full_width_equals_brute_force():
    model, vocab = _tiny_model()
    L = 3
    best = max(itertools.product(range(3), repeat=L), key=lambda seq: _seq_logprob(model, vocab, "ab", seq))
    assert charlm.beam_search(model, vocab, "ab", L, beam=3 ** L) == vocab.decode(best)


def test_greedy_sampling_equals_beam_width_one():
    model, vocab = _tiny_model(seed=1)
    assert charlm.sample(model, vocab, "ab", 6, temperature=0) == charlm.beam_search(model, vocab, "ab", 6, beam=1)


def test_sampling_is_deterministic_per_seed_and_respects_top_k():
    model, vocab = _tiny_model(seed=2)
    s1 = charlm.sample(model, vocab, "a", 50, temperature=1.0, seed=7)
    assert s1 == charlm.sample(model, vocab, "a", 50, temperature=1.0, seed=7)
    assert len(s1) == 50 and set(s1) <= set("abc")
    # top-1 sampling is greedy whatever the temperature
    assert charlm.sample(model, vocab, "a", 20, temperature=2.0, top_k=1, seed=1) == \
        charlm.sample(model, vocab, "a", 20, temperature=0)


def test_priming_with_an_unseen_character_is_a_clear_error():
    model, vocab = _tiny_model()
    with pytest.raises(KeyError, match="'z'"):
        charlm.sample(model, vocab, "az", 5)


def test_word_level_training_runs_and_reports_perplexity(small_corpus):
    res = charlm.train(_cfg(small_corpus, level="word", max_vocab=300, steps=20, eval_every=20, seq_len=8),
                       log=lambda m: None)
    assert res["vocab"].level == "word" and len(res["vocab"]) == 300
    assert math.isfinite(res["val"]["perplexity"]) and res["val"]["perplexity"] < 300


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tinygrad_rnn.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_train_eval_sample(small_corpus, tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "--corpus", small_corpus, "--steps", "12", "--hidden", "32", "--seq-len", "16",
             "--eval-every", "6", "--out", str(out), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 12 and summary["val_ppl"] > 1 and summary["tokens_per_s"] > 0
    assert summary["val_loss"] == pytest.approx(math.log(summary["val_ppl"])) and summary["train_loss"] > 0
    r = _cli("eval", "--checkpoint", str(out / "last.npz"), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["perplexity"] == pytest.approx(summary["val_ppl"], rel=1e-6)
    r = _cli("sample", "--checkpoint", str(out / "last.npz"), "--prime", "The", "--length", "30", "--seed", "4",
             cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("The") and len(r.stdout.rstrip("\n")) >= 30
    r2 = _cli("sample", "--checkpoint", str(out / "last.npz"), "--prime", "The", "--length", "30", "--seed", "4",
              cwd=tmp_path)
    assert r2.stdout == r.stdout
    r = _cli("sample", "--checkpoint", str(out / "last.npz"), "--prime", "The", "--beam", "3", "--length", "10",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("sample", "--checkpoint", str(out / "last.npz"), "--prime", "Ω€", cwd=tmp_path)
    assert r.returncode == 2 and "not in the vocabulary" in r.stderr


def test_training_uses_one_blas_thread_for_small_models_unless_the_user_chose(monkeypatch):
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    for v in charlm._THREAD_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    outside = blas_threads()
    with charlm.blas_threads_for(256):
        assert blas_threads() == {1}
    with charlm.blas_threads_for(1024):
        assert blas_threads() == outside  # big products: the pool is left as it is
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    before = blas_threads()
    with charlm.blas_threads_for(256):
        assert blas_threads() == before  # the user's choice stands


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_hot_model_feeds_token_ids_with_the_one_hot_numbers(cell):
    # CharRNN hands its layer the ids; the layer fed the one-hot rows gives the same values
    tg.manual_seed(1)
    model = CharRNN(5, 6, cell=cell, num_layers=2)
    tokens = np.random.default_rng(0).integers(0, 5, (3, 7))
    logits, _ = model(tokens)
    out, _ = model.rnn(tg.nn.functional.one_hot(tokens, 5))
    np.testing.assert_array_equal(logits.data, model.head(out).data)
    # the Elman and GRU layers check ids in their fused step, the LSTM layer in its input projection
    with pytest.raises(tg.ShapeError, match="(CellStep|Projection): token id 5 is out of range for 5 input features"):
        model(np.array([[0, 5]]))
