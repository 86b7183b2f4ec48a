"""The golden set's cases: each builds a model or program from fixed seeds, runs forward,
backward (and an optimizer step where it is a training step) with the code that is imported,
and returns {array name: array}. `make_golden.py` stores what they return at one commit;
`tests/test_golden.py` runs them again and wants the same bits.

Everything here goes through the public API (Tensor, nn, optim, functional), except
`thresholds` (the speed knobs of today's engine) and `_fuzz_namespace` (the fused steps the
fuzz programs call by name): when those move, retarget these two functions, nothing else.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn import functional as F

F32, F64 = np.float32, np.float64


# ----------------------------------------------------------------------------- the knobs
@contextlib.contextmanager
def thresholds(block_rows=None, outer_rows=None, outer_min_size=None, runs_kept=None):
    """Set the engine's speed thresholds for the cases run inside; None keeps a default.

    block_rows      rows per block of recurrent states and their gradient twins
                    (tinygrad_rnn/fast/blocks.py BLOCK_ROWS, default 64)
    outer_rows      rows of deferred weight-gradient factors that make the walk evaluate them
                    early (fast/accumulate.py OUTER_ROWS, default 4096)
    outer_min_size  weight elements below which a product not fed by a gradient row is
                    evaluated at once (fast/accumulate.py OUTER_MIN_SIZE, default 128 * 128)
    runs_kept       blocks whose open runs one walk keeps (fast/blocks.py RUNS_KEPT, default 4)

    These are module globals read at each use, so setting them here is all it takes."""
    from tinygrad_rnn.fast import accumulate, blocks

    knobs = [(blocks, "BLOCK_ROWS", block_rows), (accumulate, "OUTER_ROWS", outer_rows),
             (accumulate, "OUTER_MIN_SIZE", outer_min_size), (blocks, "RUNS_KEPT", runs_kept)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in knobs]
    try:
        for module, name, value in knobs:
            if value is not None:
                setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def _fuzz_namespace() -> dict:
    """The names a fuzz program's body uses besides its leaves and constants."""
    from tinygrad_rnn.fast.steps import GRUCellStep, LSTMCellStep, RNNCellStep

    return {"np": np, "tg": tg, "F": F, "RNNCellStep": RNNCellStep, "LSTMCellStep": LSTMCellStep,
            "GRUCellStep": GRUCellStep, "WIDE": np.float64}


def environment() -> dict:
    """What besides the code decides the bits: numpy's and numba's versions, the BLAS numpy
    calls with the kernel set it picked for this CPU, and the CPU numba compiles for."""
    import llvmlite.binding
    import numba
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, which np.dot inside numba kernels calls)
    import threadpoolctl

    # both BLAS, loaded or not by what ran before: otherwise the list depends on the test order
    blas = sorted(f"{i['internal_api']} {i['version']} {i.get('architecture')}"
                  for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    return {"numpy": np.__version__, "numba": numba.__version__, "blas": blas,
            "cpu": llvmlite.binding.get_host_cpu_name()}


# ----------------------------------------------------------------------------- helpers
def _fill(module, seed: int, dtype):
    """Every parameter from U(-1/sqrt(n), 1/sqrt(n)), n its last dimension: our own numbers,
    so the cases test the arithmetic, not the initialisers."""
    module.to(dtype)
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        bound = 1 / math.sqrt(p.shape[-1])
        p.data = rng.uniform(-bound, bound, p.shape).astype(dtype)
    return module


def _grads(out: dict, module, prefix="grad") -> None:
    for name, p in module.named_parameters():
        out[f"{prefix}.{name}"] = p.grad.data.copy()


def _params(out: dict, module, prefix="param") -> None:
    for name, p in module.named_parameters():
        out[f"{prefix}.{name}"] = p.data.copy()


def _detached(state):
    """The carried state cut from the graph of the window before, as the training loop does."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _projection(seed: int, shape, dtype) -> tg.Tensor:
    """Fixed weights that reduce an output to a scalar loss, so that every element of it matters."""
    return tg.Tensor(np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype))


def _start():
    tg.set_backend("numba")


# ----------------------------------------------------------------------------- charlm steps
V, B, T = 65, 32, 64  # the charlm benchmark's and the CLI's vocabulary, batch and BPTT length


def cell_loop_step(hidden: int, ids: bool, dtype, keep_params: bool = True) -> dict:
    """benchmarks/charlm_step.py's step: nn.RNNCell in a Python loop on token ids or one-hot rows,
    tg.stack, a Linear head, cross-entropy, backward, one SGD step."""
    _start()
    tokens = np.random.default_rng(1234).integers(0, V, size=(T + 1, B))
    cell, head = _fill(nn.RNNCell(V, hidden), 1, dtype), _fill(nn.Linear(hidden, V), 2, dtype)
    x = tokens[:-1] if ids else tg.Tensor(np.eye(V, dtype=dtype)[tokens[:-1]])
    y = tokens[1:].reshape(-1)
    params = list(cell.parameters()) + list(head.parameters())
    opt = optim.SGD(params, lr=0.01)
    h, hs = None, []
    for t in range(T):
        h = cell(x[t], h)
        hs.append(h)
    states = tg.stack(hs)
    loss = F.cross_entropy(head(states.reshape(-1, hidden)), y)
    loss.backward()
    out = {"loss": loss.data.copy(), "h_last": hs[-1].data.copy()}
    _grads(out, cell, "grad.cell")
    _grads(out, head, "grad.head")
    opt.step()
    if keep_params:
        _params(out, cell, "param.cell")
        _params(out, head, "param.head")
    return out


def model_steps(hidden: int, cell: str, embedding: int, dtype, steps: int = 2, seq: int = T,
                batch: int = B, vocab: int = V, keep_params: bool = True) -> dict:
    """The CLI's training step (models/charlm.py `train`): CharRNN on token ids, cross-entropy,
    backward, clip_grad_norm_(5), Adam; `steps` consecutive windows, the state carried over
    and detached between them as sequential sampling does."""
    _start()
    from tinygrad_rnn.models.charlm import CharRNN

    stream = np.random.default_rng(99).integers(0, vocab, size=(batch, steps * seq + 1))
    model = _fill(CharRNN(vocab, hidden, 1, cell, embedding), 3, dtype)
    model.train()
    opt = optim.Adam(model.parameters(), lr=2e-3)
    out, state = {}, None
    if embedding:
        # The CLI starts from None; here the first window starts from explicit zeros. With None
        # the layer makes its first h with the embedding's dtype, and whether that dtype object
        # is numpy's float32 singleton depends on whether numba compiled the embedding kernel in
        # this process or loaded it from its cache (loaded: it is not). kernels/matmul.py
        # `_preact_swaps` tests `h.dtype is float32` and picks one of two products that differ
        # in the last bit at these shapes, so that case has no single golden answer.
        zeros = np.zeros((1, batch, hidden), dtype)
        state = (tg.Tensor(zeros), tg.Tensor(zeros)) if cell == "lstm" else tg.Tensor(zeros)
    for s in range(steps):
        x, y = stream[:, s * seq:(s + 1) * seq], stream[:, s * seq + 1:(s + 1) * seq + 1]
        logits, new_state = model(x, _detached(state))
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(list(model.parameters()), 5.0)
        out[f"step{s}.loss"], out[f"step{s}.grad_norm"] = loss.data.copy(), norm.data.copy()
        opt.step()
        state = new_state
    _grads(out, model)  # the last step's, clipped
    if keep_params:
        _params(out, model)
    for i, s in enumerate(state if isinstance(state, tuple) else (state,)):
        out[f"state.{i}"] = s.data.copy()
    return out


# ----------------------------------------------------------------------------- sequence layers
def sequence_layer(kind: str, dtype, ids: bool = False, seq: int = 7, batch: int = 3, inputs: int = 5,
                   hidden: int = 6, extra: dict | None = None, with_hx: bool = True, seed: int = 0,
                   keep_activations: bool = True) -> dict:
    """nn.RNN / nn.LSTM / nn.GRU (`extra`: num_layers, bidirectional, batch_first, dropout,
    nonlinearity) on a float input that requires grad, or on token ids; hx requires grad too.
    The loss projects output and h_n (and c_n) onto fixed weights. Without `keep_activations`
    the output and the input's gradient are not kept (long cases: the files' size)."""
    _start()
    extra = dict(extra or {})
    layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](inputs, hidden, **extra)
    _fill(layer, 10 + seed, dtype)
    rng = np.random.default_rng(20 + seed)
    first = (batch, seq) if extra.get("batch_first") else (seq, batch)
    if ids:
        x = rng.integers(0, inputs, size=first)
    else:
        x = tg.Tensor(rng.uniform(-1, 1, first + (inputs,)).astype(dtype), requires_grad=True)
    n_states = 2 if kind == "lstm" else 1
    layers = extra.get("num_layers", 1) * (2 if extra.get("bidirectional") else 1)
    hx = None
    if with_hx:
        hx = tuple(tg.Tensor(rng.uniform(-0.5, 0.5, (layers, batch, hidden)).astype(dtype), requires_grad=True)
                   for _ in range(n_states))
    if extra.get("dropout"):
        tg.manual_seed(7)
    output, h_n = layer(x, None if hx is None else (hx if n_states == 2 else hx[0]))
    finals = h_n if n_states == 2 else (h_n,)
    loss = (output * _projection(30, output.shape, dtype)).sum()
    for i, f in enumerate(finals):
        loss = loss + (f * _projection(31 + i, f.shape, dtype)).sum()
    loss.backward()
    out = {"loss": loss.data.copy()}
    if keep_activations:
        out["output"] = output.data.copy()
    for i, f in enumerate(finals):
        out[f"h_n.{i}"] = f.data.copy()
    _grads(out, layer)
    if not ids and keep_activations:
        out["grad.input"] = x.grad.data.copy()
    for i, h in enumerate(hx or ()):
        out[f"grad.hx.{i}"] = h.grad.data.copy()
    return out


def cell_loop(kind: str, dtype, seq: int = 6, batch: int = 3, inputs: int = 4, hidden: int = 5,
              ids: bool = False, per_step_head: bool = False, seed: int = 0, keep_activations: bool = True) -> dict:
    """nn.RNNCell / LSTMCell / GRUCell looped by hand; the loss reads every step's h (through a
    Linear head per step with `per_step_head`, else through tg.stack), plus one unbatched step.
    Without `keep_activations` the inputs' gradients are not kept."""
    _start()
    cell = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind](inputs, hidden)
    _fill(cell, 40 + seed, dtype)
    head = _fill(nn.Linear(hidden, 3), 41 + seed, dtype) if per_step_head else None
    rng = np.random.default_rng(50 + seed)
    if ids:
        xs = [rng.integers(0, inputs, size=batch) for _ in range(seq)]
    else:
        xs = [tg.Tensor(rng.uniform(-1, 1, (batch, inputs)).astype(dtype), requires_grad=True) for _ in range(seq)]
    state, hs = None, []
    for x in xs:
        state = cell(x, state)
        hs.append(state[0] if kind == "lstm" else state)
    if per_step_head:
        targets = rng.integers(0, 3, size=(seq, batch))
        loss = F.cross_entropy(head(hs[0]), targets[0])
        for t in range(1, seq):
            loss = loss + F.cross_entropy(head(hs[t]), targets[t])
    else:
        stacked = tg.stack(hs)
        loss = (stacked * _projection(60, stacked.shape, dtype)).sum()
    one = cell(xs[-1][0] if not ids else xs[-1][:1][0], None if kind == "lstm" else hs[-1][0])
    one = one[0] if kind == "lstm" else one
    loss = loss + (one * _projection(61, one.shape, dtype)).sum()
    loss.backward()
    out = {"loss": loss.data.copy(), "h_last": hs[-1].data.copy()}
    _grads(out, cell, "grad.cell")
    if head is not None:
        _grads(out, head, "grad.head")
    if not ids and keep_activations:
        for t, x in enumerate(xs):
            out[f"grad.x{t}"] = x.grad.data.copy()
    return out


def interleaved_loops(dtype, seq: int = 9, batch: int = 2, hidden: int = 4) -> dict:
    """Two RNNCells stepped alternately in one loop (their states interleave in the blocks),
    the second reading the first's output; backward twice over one retained graph, so the
    gradients are the sum of two walks."""
    _start()
    a, b = _fill(nn.RNNCell(3, hidden), 70, dtype), _fill(nn.RNNCell(hidden, hidden), 71, dtype)
    rng = np.random.default_rng(72)
    xs = rng.integers(0, 3, size=(seq, batch))
    ha = hb = None
    outs = []
    for t in range(seq):
        ha = a(xs[t], ha)
        hb = b(ha, hb)
        outs.append(hb)
    stacked = tg.stack(outs)
    loss = (stacked * _projection(73, stacked.shape, dtype)).sum() + (ha * _projection(74, ha.shape, dtype)).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    out = {"loss": loss.data.copy()}
    _grads(out, a, "grad.a")
    _grads(out, b, "grad.b")
    return out


# ----------------------------------------------------------------------------- fuzz programs
def program_to_json(program) -> dict:
    """A fuzz program (tests/fuzz_programs.py `Program`) as plain data: leaves and constants as
    (name, shape, float64 values), the body as lines. json writes floats exactly (repr)."""
    def arrays(pairs):
        return [[name, list(np.shape(v)), np.asarray(v, np.float64).ravel().tolist()] for name, v in pairs]

    return {"leaves": arrays(program.leaves), "consts": arrays(program.consts), "body": list(program.body)}


def load_programs(blob: np.ndarray) -> list:
    return json.loads(blob.tobytes().decode())


@functools.lru_cache(maxsize=None)
def _compile(source: str):
    return compile(source, "<golden fuzz program>", "exec")  # once for both dtypes: 8 ms a program


def run_program(program: dict, dtype) -> dict:
    """Forward and backward of one stored program on the numba backend: its loss and every
    leaf's gradient (a leaf the loss does not reach has none and is left out)."""
    _start()
    names = [name for name, _, _ in program["leaves"]]
    namespace = _fuzz_namespace()
    namespace["DT"] = dtype
    for name, shape, values in program["consts"]:
        namespace[name] = tg.Tensor(np.array(values, dtype=dtype).reshape(shape))
    source = "\n".join([f"def program({', '.join(names)}):", *["    " + line for line in program["body"]],
                        "    return loss"])
    exec(_compile(source), namespace)
    leaves = [tg.Tensor(np.array(values, dtype=dtype).reshape(shape), requires_grad=True)
              for _, shape, values in program["leaves"]]
    loss = namespace["program"](*leaves)
    loss.backward()
    out = {"loss": loss.data.copy()}
    for name, leaf in zip(names, leaves):
        if leaf.grad is not None:
            out[f"grad.{name}"] = leaf.grad.data.copy()
    return out


# ----------------------------------------------------------------------------- the families
# Knob settings for the block/flush edge cases (see `thresholds`): every row its own block and
# every deferred gradient evaluated at once; blocks and flushes that do not line up with each
# other or with the sequence; and deferral only where a gradient row asks for it.
TINY = dict(block_rows=1, outer_rows=1, outer_min_size=1, runs_kept=1)
SMALL = dict(block_rows=4, outer_rows=9, outer_min_size=1, runs_kept=1)
LATE = dict(block_rows=5, outer_rows=10**9, outer_min_size=10**9)
EDGE_PROGRAMS = 40  # fuzz programs also run under SMALL


def _dtypes(name_to_case: dict) -> dict:
    """Each case in float32 and float64."""
    return {f"{name}.{np.dtype(dt).name}": (lambda f=f, dt=dt: f(dt)) for name, f in name_to_case.items()
            for dt in (F32, F64)}


def _under(knobs: dict, f):
    def run():
        with thresholds(**knobs):
            return f()
    return run


def families(programs: list) -> dict:
    """{family: {case: a function returning {array name: array}}}; `programs` are the stored
    fuzz programs (load_programs)."""
    lstm_gru = _dtypes({
        "model_lstm_ids": lambda dt: model_steps(32, "lstm", 0, dt, seq=16, batch=4, vocab=20),
        "model_gru_embedding": lambda dt: model_steps(32, "gru", 8, dt, seq=16, batch=4, vocab=20),
        "lstm_layer": lambda dt: sequence_layer("lstm", dt),
        "gru_layer": lambda dt: sequence_layer("gru", dt, with_hx=False),
        "lstm_cells": lambda dt: cell_loop("lstm", dt),
        "gru_cells": lambda dt: cell_loop("gru", dt),
        "lstm_cells_ids": lambda dt: cell_loop("lstm", dt, ids=True),
        "gru_cells_ids": lambda dt: cell_loop("gru", dt, ids=True),
    })
    bidirectional = _dtypes({
        "rnn_2layer": lambda dt: sequence_layer("rnn", dt, extra=dict(num_layers=2, bidirectional=True)),
        "rnn_relu_2layer": lambda dt: sequence_layer(
            "rnn", dt, extra=dict(num_layers=2, bidirectional=True, nonlinearity="relu"), seed=1),
        "lstm_2layer_batch_first_ids": lambda dt: sequence_layer(
            "lstm", dt, ids=True, extra=dict(num_layers=2, bidirectional=True, batch_first=True), seed=2),
        "gru_2layer_dropout": lambda dt: sequence_layer(
            "gru", dt, extra=dict(num_layers=2, bidirectional=True, dropout=0.3), seed=3),
    })
    edge_cases = {
        "rnn_cells_ids_head": lambda dt: cell_loop("rnn", dt, seq=11, hidden=6, ids=True, per_step_head=True),
        "rnn_cells_dense": lambda dt: cell_loop("rnn", dt, seq=11, hidden=6),
        "rnn_2layer_bidirectional": lambda dt: sequence_layer(
            "rnn", dt, seq=11, extra=dict(num_layers=2, bidirectional=True)),
        "lstm_layer": lambda dt: sequence_layer("lstm", dt, seq=11),
        "gru_layer_ids": lambda dt: sequence_layer("gru", dt, ids=True, seq=11),
        "interleaved_twice": lambda dt: interleaved_loops(dt),
    }
    edges = {}
    for label, knobs in (("tiny", TINY), ("small", SMALL), ("late", LATE)):
        for name, f in _dtypes(edge_cases).items():
            edges[f"{label}.{name}"] = _under(knobs, f)
    # at the default thresholds: loops longer than one block (64 rows) whose weights' deferred
    # gradients pass the flush threshold (4096 rows) halfway (checked: without the flush, some
    # of their gradients' bits differ)
    edges.update({f"default.{k}": f for k, f in _dtypes({
        "rnn_cells_130_steps_head": lambda dt: cell_loop(
            "rnn", dt, seq=130, batch=40, hidden=3, inputs=3, per_step_head=True, keep_activations=False),
        "rnn_layer_100_steps": lambda dt: sequence_layer(
            "rnn", dt, seq=100, batch=50, hidden=3, inputs=3, keep_activations=False),
    }).items()})
    for i, program in enumerate(programs[:EDGE_PROGRAMS]):
        for dt in (F32, F64):
            edges[f"small.fuzz{i:03d}.{np.dtype(dt).name}"] = _under(
                SMALL, lambda p=program, dt=dt: run_program(p, dt))
    return {
        # the parameters after the optimizer step are kept for one case of each optimizer and
        # size (the others' gradients already fix them): the stored files stay near 5 MB
        "charlm_h64": _dtypes({
            "cells_ids_sgd": lambda dt: cell_loop_step(64, True, dt),
            "cells_one_hot_sgd": lambda dt: cell_loop_step(64, False, dt, keep_params=False),
            "model_ids_adam": lambda dt: model_steps(64, "rnn", 0, dt),
            "model_embedding_adam": lambda dt: model_steps(64, "rnn", 16, dt, keep_params=False),
        }),
        "charlm_h256": {
            "cells_ids_sgd.float32": lambda: cell_loop_step(256, True, F32),
            "cells_one_hot_sgd.float32": lambda: cell_loop_step(256, False, F32, keep_params=False),
            "model_embedding_adam.float32": lambda: model_steps(256, "rnn", 16, F32, steps=1, keep_params=False),
            "model_ids_adam.float64": lambda: model_steps(256, "rnn", 0, F64, steps=1, keep_params=False),
        },
        "lstm_gru": lstm_gru,
        "bidirectional": bidirectional,
        "edges": edges,
        "fuzz": {f"{i:03d}.{np.dtype(dt).name}": (lambda p=program, dt=dt: run_program(p, dt))
                 for i, program in enumerate(programs) for dt in (F32, F64)},
    }
