"""Memory stays bounded: across training steps, and inside one long backward pass.

The tests count bytes with `tracemalloc`, which sees every Python object and every numpy
buffer, so a leaked array of a few hundred bytes per step shows up; resident memory
(/proc/self/statm) is checked too, loosely, because the allocator keeps freed pages around.
Kernels are loaded and compiled before measuring: importing numba's machinery allocates
megabytes once.

(tests/test_rnn.py::test_memory_stays_flat_over_many_truncated_chunks covers an LSTM over
40 truncated chunks; here it is the char-RNN trainer itself, and a 10,000-step backward.)
"""
from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.fast import accumulate
from tinygrad_rnn.models import charlm
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.text import Vocab, builtin_text, load_corpus
from modes import path


def traced() -> int:
    return tracemalloc.get_traced_memory()[0]


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(builtin_text()[:30_000], encoding="utf-8")
    return str(path)


# ============================================================================ training
def config(corpus, steps):
    return charlm.TrainConfig(corpus=corpus, hidden=32, seq_len=16, batch_size=4, steps=steps,
                              eval_every=0, seed=0)


def one_step_graph_bytes(cfg) -> int:
    """What the graph of one training step holds until its backward frees it."""
    text = load_corpus(cfg.corpus)
    vocab = Vocab.from_text(text, cfg.level, cfg.max_vocab)
    tokens = vocab.encode(text)[:cfg.batch_size * (cfg.seq_len + 1)].reshape(cfg.batch_size, -1)
    tg.manual_seed(0)
    model = charlm.CharRNN(len(vocab), cfg.hidden, cfg.layers, cfg.cell)

    def loss():
        logits, _ = model(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, len(vocab)), tokens[:, 1:].reshape(-1))

    loss()  # load and compile the kernels first
    gc.collect()
    tracemalloc.start()
    try:
        start = traced()
        graph = loss()  # noqa: F841  (alive while measured)
        return traced() - start
    finally:
        tracemalloc.stop()


def training_growth(cfg, warmup: int) -> tuple:
    """charlm.train(cfg): (traced bytes gained from step `warmup` to the last step, not
    counting the history records train keeps on purpose; resident bytes gained)."""
    marks = {}

    def progress(record, tokens_per_s):
        if record["step"] in (warmup, cfg.steps):
            gc.collect()
            marks[record["step"]] = (traced(), resident())

    tracemalloc.start()
    try:
        result = charlm.train(cfg, log=lambda message: None, progress=progress)
        # one record (a few floats) per step: weigh them so they are not taken for a leak
        history = result.pop("history")
        gc.collect()
        before = traced()
        n_records = len(history)
        del history
        gc.collect()
        per_record = (before - traced()) / n_records
    finally:
        tracemalloc.stop()
    assert 0 < per_record < 1000, per_record
    steps = cfg.steps - warmup
    return (marks[cfg.steps][0] - marks[warmup][0] - steps * per_record,
            marks[cfg.steps][1] - marks[warmup][1])


# Measured: 9-13 kB over 900 steps (interpreter caches). Keeping even one (batch, hidden)
# float32 array per step, the carried hidden state say (512 bytes of data, its header and its
# Tensor), adds ~780 bytes a step: 700 kB over 900 steps; keeping every step's graph (~120 kB)
# far more.
LEAK_MARGIN = 64_000


def test_a_thousand_training_steps_keep_memory_flat(corpus):
    """charlm.train, 1,000 steps with the hidden state carried (and detached) between them."""
    cfg = config(corpus, steps=1000)
    graph = one_step_graph_bytes(cfg)
    growth, resident_growth = training_growth(cfg, warmup=100)
    assert growth < LEAK_MARGIN, f"traced memory grew {growth:.0f} bytes over 900 steps (graph {graph} bytes)"
    # Resident memory moves with the allocator's free lists and with tracemalloc's own tables
    # (measured: 0.6-1.3 MB); a tenth of a graph per step would be ~10 MB.
    assert resident_growth < 900 * graph / 10, (resident_growth, graph)


def test_a_state_kept_every_step_is_caught(corpus, monkeypatch):
    """The check above has teeth: keep each step's detached state, as a user's list of them
    would, and it fails within 250 steps."""
    kept, detach = [], charlm.detach_state
    monkeypatch.setattr(charlm, "detach_state", lambda state: kept.append(detach(state)) or kept[-1])
    growth, _ = training_growth(config(corpus, steps=300), warmup=50)
    assert growth > LEAK_MARGIN, growth


# ============================================================================ one long backward
T, B, I, H = 10_000, 16, 8, 32


@pytest.mark.parametrize("steps,fused", [
    pytest.param(T, True, id="fused-step"),
    # op by op, each step has side branches (x @ W_ih.T, the bias): the walk must finish
    # them before it moves to the step before, or half the graph stays held to the end
    pytest.param(2_000, False, id="generic-ops"),
])
def test_backward_frees_each_step_as_it_passes(steps, fused):
    """An RNNCell unrolled `steps` steps: during backward, memory falls as the walk moves
    from the last step to the first, and never rises above what the forward pass holds."""
    with path(fused):  # plain: the step recorded op by op
        _frees_each_step(steps)


def _frees_each_step(steps):
    tg.manual_seed(0)
    cell = nn.RNNCell(I, H)
    xs = np.random.default_rng(0).standard_normal((steps, B, I)).astype(np.float32)
    h = None
    for t in range(3):  # load the kernels first: a loop's backward uses more than a step's
        h = cell(tg.Tensor(xs[t]), h)
    h.sum().backward()
    cell.zero_grad()
    probes = (steps // 10, steps // 2, 9 * steps // 10)
    held = {}

    def probe(k):
        def hook(grad):
            held[k] = traced()  # the walk reaches step k once steps k+1.. are done with
        return hook

    gc.collect()
    tracemalloc.start()
    try:
        start = traced()
        h = None
        for t in range(steps):
            h = cell(tg.Tensor(xs[t]), h)
            if t in probes:
                h.register_hook(probe(t))  # no reference to h is kept: that would pin it
        loss = h.sum()
        del h
        gc.collect()
        graph = traced() - start
        tracemalloc.reset_peak()
        before = traced()
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
        del loss
        gc.collect()
        after = traced()
    finally:
        tracemalloc.stop()

    # What backward may hold beyond the forward graph: the weights' gradients, and the
    # fast accumulator's deferred weight products (fast/lazy.py OuterGrad): up to OUTER_ROWS rows
    # of each weight's two factors wait to be summed in one GEMM, and are copied once when they are.
    weights = sum(p.data.nbytes for p in cell.parameters())
    deferred = 2 * accumulate.OUTER_ROWS * (I + 2 * H) * 4
    slack = 2 * weights + deferred + 64_000
    assert graph > 1_000 * steps, graph  # the measurement sees the graph: ~2.7 kB a step
    assert peak - before <= slack, f"backward peaked {peak - before} bytes above the forward graph"
    for k in probes:
        # steps 0..k are still to walk: their share of the graph, plus what the walk may defer
        expected = graph * (k + 1) / steps
        assert held[k] - start <= expected + slack, (
            f"at step {k}, {held[k] - start} bytes held, expected at most {expected:.0f} + {slack}")
    assert after - start < 64_000, f"{after - start} bytes left after backward"


@pytest.mark.parametrize("fused", [True, False], ids=["fused-step", "generic-ops"])
def test_stack_copies_the_states_once_and_shares_no_memory_with_them(fused):
    """`stack` makes one new array, as PyTorch's does: the T hidden states a char-RNN stacks
    for its output layer are then held twice while the graph keeps them for BPTT (the price of
    a result that shares no memory with its inputs; docs/fast.md), and writing into the result
    leaves the states alone."""
    steps, batch, hidden = 300, 16, 64
    with path(fused):
        tg.manual_seed(0)
        cell = nn.RNNCell(I, hidden)
        xs = np.random.default_rng(1).standard_normal((steps, batch, I)).astype(np.float32)
        cell(tg.Tensor(xs[0])).sum().backward()
        cell.zero_grad()
        states = steps * batch * hidden * 4
        gc.collect()
        tracemalloc.start()
        try:
            h, outs = None, []
            for t in range(steps):
                h = cell(tg.Tensor(xs[t]), h)
                outs.append(h)
            before = traced()
            hs = tg.stack(outs)
            gc.collect()
            grown = traced() - before
        finally:
            tracemalloc.stop()
    assert 0.99 * states < grown < 1.05 * states, f"stack added {grown / states:.2f}x the states' bytes"
    assert not any(np.shares_memory(o.data, hs.data) for o in outs)
    kept = outs[1].data.copy()
    hs.data[1] = 7.0
    assert np.array_equal(outs[1].data, kept)
    assert all(np.array_equal(o.data, hs.data[t]) for t, o in enumerate(outs) if t != 1)
