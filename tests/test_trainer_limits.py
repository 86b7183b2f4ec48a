"""Issue 23, items 6, 7, 9 and 11: overflow, options that silently did the wrong thing, a graph
too big to draw, and a corpus download without a network. The CLI runs in-process."""
import http.server
import json
import os
import pathlib
import stat
import threading
import time

import numpy as np
import pytest

import cli_support
from cli_support import run, write_corpus
from tinygrad_rnn import checkpoint, viz
from tinygrad_rnn.models import charlm
from tinygrad_rnn.text import corpora

TINY = cli_support.TINY + ["--seed", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory)


def strict_json(line: str):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


# ----------------------------------------------------------------------------- item 6: overflow
def test_lr_1e30_stops_as_diverged_and_says_no_checkpoint_was_written(corpus, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--corpus", corpus, "--steps", "5", "--eval-every", "3", "--lr", "1e30",
                       "--out", tmp_path, *TINY)
    # step 1 is fine; by step 2 the loss is ~7e30 nats a token: finite, but past any perplexity
    assert code == 3 and err.startswith("error: loss became ") and err.count("\n") == 1, err
    assert "nats a token at step 2; no checkpoint was written (the first comes at step 3)." in err
    assert not (tmp_path / "last.npz").exists()


def test_lr_inf_says_nothing_was_saved_without_out(corpus, capsys):
    code, _, err = run(capsys, "train", "--corpus", corpus, "--steps", "5", "--lr", "inf", *TINY)
    assert code == 3 and err == ("error: loss became nan at step 2; nothing was saved (no --out). Lower --lr or "
                                 "set --clip-norm.\n"), err


def test_divergence_after_a_checkpoint_names_it_and_keeps_it(corpus, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--corpus", corpus, "--steps", "5", "--eval-every", "1", "--lr", "1000",
                       "--optimizer", "sgd", "--clip-norm", "0", "--out", tmp_path, *TINY)
    assert code == 3, err
    step = charlm.load_model(tmp_path / "last.npz")[2]["step"]
    assert f"the last good checkpoint ({tmp_path / 'last.npz'}, step {step}) is kept." in err


@pytest.fixture(scope="module")
def huge_weights(corpus, tmp_path_factory):
    """A checkpoint whose read-out weights are scaled by 1e30: its loss overflows exp()."""
    out = tmp_path_factory.mktemp("huge")
    charlm.train(charlm.TrainConfig(corpus=corpus, out=str(out), steps=2, hidden=16, seq_len=8, batch_size=4),
                 log=lambda m: None)
    arrays, meta = checkpoint.load(out / "last.npz")
    arrays["model.head.weight"] = arrays["model.head.weight"] * np.float32(1e30)
    checkpoint.save(out / "last.npz", arrays, meta)
    return out / "last.npz"


def test_eval_of_huge_weights_reports_an_infinite_perplexity(huge_weights, capsys):
    code, out, err = run(capsys, "eval", "--checkpoint", huge_weights)
    assert code == 0, err
    assert "perplexity inf" in out
    code, out, _ = run(capsys, "eval", "--checkpoint", huge_weights, "--json")
    res = strict_json(out)
    assert code == 0 and res["perplexity"] is None and res["not_finite"] == {"perplexity": "inf"}
    assert res["nats"] > 709


def test_train_json_is_strict_json(corpus, capsys):
    code, out, _ = run(capsys, "train", "--corpus", corpus, "--steps", "2", "--json", *TINY)
    assert code == 0 and "not_finite" not in strict_json(out)


# ----------------------------------------------------------------------------- item 7: silent wrong answers
def test_clip_value_0_is_off_like_clip_norm_0(corpus):
    cfg = dict(corpus=corpus, steps=6, hidden=16, seq_len=8, batch_size=4, eval_every=0)
    losses = {cv: [r["loss"] for r in charlm.train(charlm.TrainConfig(clip_value=cv, **cfg),
                                                    log=lambda m: None)["history"]] for cv in (None, 0.0)}
    assert losses[0.0] == losses[None]  # was: every gradient zeroed, the loss never moved


def test_a_model_too_big_for_memory_is_refused_up_front_with_the_number(corpus, tmp_path, capsys):
    t0 = time.perf_counter()
    code, _, err = run(capsys, "train", "--corpus", corpus, "--hidden", "100000", "--steps", "1", "--out", tmp_path,
                       "--seq-len", "8", "--batch-size", "4", "--no-progress")
    assert code == 2 and time.perf_counter() - t0 < 20
    assert err.startswith("error: train: --hidden 100000 --layers 1 --embedding 0 --batch-size 4 --seq-len 8 (cell "
                          "rnn, "), err
    assert "GB (" in err and "bytes) of memory; this machine has " in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoint, and the lock released


def test_the_memory_estimate_counts_what_training_allocates():
    from tinygrad_rnn.models import config

    cfg = charlm.TrainConfig(hidden=64, cell="lstm", layers=2, embedding=8, optimizer="adam")
    model = charlm.CharRNN(50, 64, 2, "lstm", 8)
    weights = sum(p.data.size for p in model.parameters())
    # parameters + gradients + two Adam buffers + a checkpoint's copy of all three: 7 copies
    assert config.estimate_bytes(cfg, 50) >= 4 * 7 * weights


# ----------------------------------------------------------------------------- item 9: graph
@pytest.fixture
def fake_dot(tmp_path, monkeypatch):
    """A `dot` on PATH that records its calls and sleeps for $FAKE_DOT_SLEEP seconds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    script = bin_dir / "dot"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nsleep ${{FAKE_DOT_SLEEP:-0}}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_graph_past_the_render_limit_writes_only_the_dot_file(tmp_path, capsys, fake_dot):
    code, out, err = run(capsys, "graph", "--steps", "80", "--out", tmp_path)
    assert code == 0 and (tmp_path / "rnn_graph.dot").is_file() and not fake_dot.exists()  # dot never ran
    assert err.startswith("not rendered: past 30 steps Graphviz takes minutes")
    code, _, err = run(capsys, "graph", "--steps", "501", "--out", tmp_path)
    assert code == 2 and err == "error: graph --steps: must be 1 or more and at most 500, got 501\n"


def test_a_dot_that_takes_too_long_is_stopped(tmp_path, capsys, fake_dot, monkeypatch):
    monkeypatch.setenv("FAKE_DOT_SLEEP", "30")
    monkeypatch.setattr(viz, "_DOT_TIMEOUT_S", 1)
    t0 = time.perf_counter()
    code, _, err = run(capsys, "graph", "--steps", "3", "--out", tmp_path)
    assert code == 1 and time.perf_counter() - t0 < 15 and fake_dot.exists()
    assert err == (f"error: Graphviz's dot did not finish rendering {tmp_path / 'rnn_graph.dot'} in 1 s and was "
                   f"stopped; the .dot file is there to render with more patience, or draw fewer steps\n")


# ----------------------------------------------------------------------------- item 11: no network
@pytest.fixture
def not_found_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/input.txt"
    server.shutdown()


@pytest.mark.parametrize("where", ["refused", "404"])
def test_shakespeare_without_the_network_is_one_line_naming_corpus_path(tmp_path, capsys, monkeypatch, where,
                                                                        request):
    url = "http://127.0.0.1:9/input.txt" if where == "refused" else request.getfixturevalue("not_found_server")
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(tmp_path))
    monkeypatch.setitem(corpora.KNOWN, "shakespeare", (url, "0" * 64, 1_115_394))
    code, out, err = run(capsys, "train", "--corpus", "shakespeare", "--steps", "1", *TINY)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: download of {url} failed (")
    assert err.endswith("); check the network, or fetch the file another way and pass its path: --corpus PATH\n")
    assert list(pathlib.Path(tmp_path).iterdir()) == []  # no partial download left
