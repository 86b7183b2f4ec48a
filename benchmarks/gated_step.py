"""One training step of a character-level LSTM or GRU language model, tinygrad_rnn against
PyTorch and against the same step written by hand in numpy.

    python benchmarks/gated_step.py                          # LSTM and GRU at H = 64, 256, 1024
    python benchmarks/gated_step.py --layers 2 --hidden 256  # two stacked layers
    python benchmarks/gated_step.py --quick                  # smoke run of a few seconds (tests)
    python benchmarks/gated_step.py --cell lstm --hidden 256 --steps 40 --json lstm.json

The step: vocabulary 65, batch 32, sequence length 64, float32; an LSTM (gates i, f, g, o) or a
GRU (gates r, z, n) of `--layers` layers over the 64 inputs, a Linear head on every step's h,
mean cross-entropy over all 2,048 positions, full backward (BPTT), one SGD update. It is the
Elman step of benchmarks/charlm_step.py with a gated cell: same data (make_data), same timing
(run_interleaved), same table (print_table). Throughput = 2,048 tokens / median step time.

Rows (timed round-robin in turns of a few steps, as charlm_step.py does). The input is the same
tokens either as one-hot rows or as token ids; one_hot(ids) @ W_ih^T is a row gather of W_ih^T,
so every row computes the same losses and gradients:

- tinygrad_rnn's nn.LSTM / nn.GRU layer (num_layers = --layers) fed one-hot rows (T, B, V) and
  fed token ids (T, B);
- tinygrad_rnn's nn.LSTMCell / nn.GRUCell in a Python loop + tg.stack, token ids and one-hot
  (1 layer only);
- PyTorch's fused torch.nn.LSTM / torch.nn.GRU on one-hot rows, and its LSTMCell / GRUCell in a
  Python loop (1 layer only), the same weights ported (PyTorch's gate order is ours), as many
  threads as numpy's BLAS uses. Optional: `pip install torch==2.13.0` enables these rows;
- the cell's forward + BPTT written by hand in numpy for speed (1 layer): buffers allocated once,
  the input projection of all T steps as one gather of W_ih^T's rows by token id, one recurrent
  GEMM per step each way, every weight gradient one GEMM over all T*B rows at the end. The floor
  a framework that runs one numpy op at a time can hope for;
- the matrix products of that hand-written step alone (same shapes, same calls): the compute floor.

Two ratios are printed: to PyTorch's fused layer (the speed issue's headline: tinygrad_rnn's
layer against torch's, one-hot rows to both) and to tinygrad_rnn's layer on one-hot rows.

Before timing, in float64 at small sizes, every tinygrad_rnn row's loss and gradients must agree
with the hand-written step's (with 2 layers, which it does not write: with tinygrad_rnn's plain
op-by-op path, `tg.fast.disabled()`) and with PyTorch's when torch is there, to 1e-9 relative;
otherwise the script stops rather than time rows that compute different things. Each table also
reports what the layer's recorded graph holds once the loss is computed (tracemalloc) against the
activations the step must keep (see `must_keep_bytes`).

Ratios are printed, never asserted: they depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc

import numpy as np

# like the trainer, the benchmarks keep freed memory in malloc (tinygrad_rnn/fast/malloc.py);
# set before tinygrad_rnn is imported
os.environ.setdefault("TINYGRAD_RNN_MALLOC", "retain")

from charlm_step import (BATCH, LR, MIN_STEPS, SEED, SEQ, TG, VOCAB, NumpyBPTT, Row, TinygradStep,
                         default_steps, finish_run, make_data, print_table, run_interleaved, start_run)

KINDS = {"lstm": "LSTM", "gru": "GRU"}
GATES = {"lstm": 4, "gru": 3}
PARAMS = ("w_ih", "w_hh", "b_ih", "b_hh")
MODULE_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


# ----------------------------------------------------------------------------- the problem


def make_gated_weights(cell: str, hidden: int, layers: int, vocab: int, seed: int = SEED + 1,
                       dtype=np.float32) -> dict:
    """PyTorch's init, U(-1/sqrt(H), 1/sqrt(H)), keyed w_ih_l0, w_hh_l0, b_ih_l0, b_hh_l0, ...,
    w_out, b_out; every row loads these same numbers."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden)
    gh = GATES[cell] * hidden

    def u(*shape):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    w = {}
    for layer in range(layers):
        n_in = vocab if layer == 0 else hidden
        w.update({f"w_ih_l{layer}": u(gh, n_in), f"w_hh_l{layer}": u(gh, hidden),
                  f"b_ih_l{layer}": u(gh), f"b_hh_l{layer}": u(gh)})
    w.update(w_out=u(vocab, hidden), b_out=u(vocab))
    return w


def recurrent_keys(layers: int) -> list:
    return [f"{p}_l{layer}" for layer in range(layers) for p in PARAMS]


def module_attr(key: str, loop: bool) -> str:
    """Our key -> the parameter's name on a layer (weight_ih_l0) or a cell (weight_ih); the same
    names in tinygrad_rnn and PyTorch."""
    return MODULE_NAMES[key[:4]] + ("" if loop else key[4:])


def must_keep_bytes(cell: str, seq: int, batch: int, hidden: int, layers: int, vocab: int, itemsize: int) -> int:
    """What one step has to hold between forward and backward, counted as a hand-written BPTT
    holds it (tanh(c) recomputed, nothing else): per layer and time step the LSTM's h, c and four
    gate activations (6 H floats a row) or the GRU's h, r, z, n and W_hn h + b_hn (5 H floats a
    row), plus the T*B*V softmax probabilities the cross-entropy's backward needs."""
    per_row = {"lstm": 6, "gru": 5}[cell] * hidden
    return (layers * seq * batch * per_row + seq * batch * vocab) * itemsize


# ----------------------------------------------------------------------------- the rows


def hidden_states(rnn, x, loop: bool, lstm: bool, stack):
    """The top layer's h at every step, (T, B, H): the layer's output, or a cell looped over time
    (an LSTM cell's state is (h, c)) and its h's joined by the framework's `stack`."""
    if not loop:
        return rnn(x)[0]
    state, hs = None, []
    for t in range(x.shape[0]):
        state = rnn(x[t], state)
        hs.append(state[0] if lstm else state)
    return stack(hs)


class TinygradGated(Row):
    """The step as a user writes it: the nn.LSTM / nn.GRU layer, or the cell in a Python loop."""

    def __init__(self, cell: str, weights: dict, x: np.ndarray, y: np.ndarray, layers: int = 1,
                 ids: bool = True, loop: bool = False, lr: float = LR):
        import tinygrad_rnn as tg
        from tinygrad_rnn import nn, optim

        self.tg, self.F, self.loop, self.lstm = tg, nn.functional, loop, cell == "lstm"
        kind = KINDS[cell]
        feed = "token ids" if ids else "one-hot"
        self.name = f"{TG} nn.{kind}Cell loop, {feed}" if loop else f"{TG} nn.{kind}, {feed}"
        hidden, vocab = weights["w_hh_l0"].shape[1], weights["w_out"].shape[0]
        self.rnn = getattr(nn, kind + "Cell")(vocab, hidden) if loop else getattr(nn, kind)(vocab, hidden, layers)
        self.head = nn.Linear(hidden, vocab)
        self.keys = recurrent_keys(1 if loop else layers) + ["w_out", "b_out"]
        self.params = [getattr(self.rnn, module_attr(k, loop)) for k in self.keys[:-2]] + \
                      [self.head.weight, self.head.bias]
        for p, key in zip(self.params, self.keys):
            p.data = np.array(weights[key], dtype=x.dtype)
        # token ids (T, B) or the one-hot rows (T, B, V): layer and cell take either
        self.x, self.y = (x.argmax(-1) if ids else tg.Tensor(x)), y
        self.opt = optim.SGD(self.params, lr=lr)

    def loss(self):
        hs = hidden_states(self.rnn, self.x, self.loop, self.lstm, self.tg.stack)
        logits = self.head(hs.reshape(-1, hs.shape[-1]))
        return self.F.cross_entropy(logits, self.y)

    step = TinygradStep.step  # loss, backward, SGD step, zero_grad: as in charlm_step.py

    def loss_and_grads(self) -> tuple:
        loss = self.loss()
        loss.backward()
        return float(loss.data), {k: p.grad.data for k, p in zip(self.keys, self.params)}


class TorchGated(Row):
    """PyTorch on the one-hot rows: the fused torch.nn.LSTM / GRU, or the cell in a Python loop."""

    def __init__(self, cell: str, weights: dict, x: np.ndarray, y: np.ndarray, layers: int = 1,
                 loop: bool = False, lr: float = LR, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.loop, self.lstm = torch, loop, cell == "lstm"
        kind = KINDS[cell]
        self.name = f"torch nn.{kind}Cell loop, one-hot" if loop else f"torch nn.{kind} (fused), one-hot"
        hidden, vocab = weights["w_hh_l0"].shape[1], weights["w_out"].shape[0]
        self.rnn = getattr(torch.nn, kind + "Cell")(vocab, hidden) if loop else \
            getattr(torch.nn, kind)(vocab, hidden, layers)
        self.head = torch.nn.Linear(hidden, vocab)
        if x.dtype == np.float64:
            self.rnn, self.head = self.rnn.double(), self.head.double()
        self.keys = recurrent_keys(1 if loop else layers) + ["w_out", "b_out"]
        self.params = [getattr(self.rnn, module_attr(k, loop)) for k in self.keys[:-2]] + \
                      [self.head.weight, self.head.bias]
        with torch.no_grad():
            for p, key in zip(self.params, self.keys):
                p.copy_(torch.from_numpy(weights[key]))
        self.x, self.y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        self.opt = torch.optim.SGD(self.params, lr=lr)

    def loss(self):
        out = hidden_states(self.rnn, self.x, self.loop, self.lstm, self.torch.stack)
        return self.torch.nn.functional.cross_entropy(self.head(out.reshape(-1, out.shape[-1])), self.y)

    def step(self) -> float:
        loss = self.loss()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return float(loss.detach())

    def loss_and_grads(self) -> tuple:
        loss = self.loss()
        loss.backward()
        return float(loss.detach()), {k: p.grad.numpy() for k, p in zip(self.keys, self.params)}


def _sigmoid_(a: np.ndarray) -> None:
    """sigmoid in place, as 0.5 * tanh(a / 2) + 0.5: four in-place passes like 1 / (1 + exp(-a)),
    and no overflow warning from exp for large negative a."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5


class NumpyGated(NumpyBPTT):
    """The buffers both hand-written gated steps share. It reuses NumpyBPTT's head (`_head`,
    `_head_gemms`: logits, softmax cross-entropy, dL/dW_out, dL/d(states)) and its SGD update
    (`step`), not its Elman buffers, so NumpyBPTT.__init__ is not called.

    act[t] holds step t's gate pre-activations, turned into the activations in place; d_in[t]
    and d_rec[t] the loss's gradient at the input side and at the recurrent side of the gate
    pre-activations (the same array for the LSTM, whose gates add both sides up before any
    nonlinearity)."""

    gates = 0

    def __init__(self, weights: dict, x: np.ndarray, y: np.ndarray, lr: float = LR):
        self.p = {k: np.array(v, dtype=x.dtype) for k, v in weights.items()}
        self.g = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.x, self.y, self.lr = x, y, lr
        seq, batch, vocab = x.shape
        hidden = self.p["w_hh_l0"].shape[1]
        gh = self.gates * hidden
        e = lambda *s: np.zeros(s, x.dtype)
        self.ids, self.x_flat, self.rows = x.argmax(-1), x.reshape(seq * batch, vocab), np.arange(seq * batch)
        self.hs = e(seq + 1, batch, hidden)  # hs[0] is h_{-1} = 0, never written
        self.logits, self.dH = e(seq * batch, vocab), e(seq * batch, hidden)
        self.act, self.d_in = e(seq, batch, gh), e(seq, batch, gh)
        self.d_rec = self.d_in
        self.gh = e(batch, gh)
        self.dh, self.dh_next, self.s1, self.s2 = e(batch, hidden), e(batch, hidden), e(batch, hidden), e(batch, hidden)

    def _project_inputs(self) -> None:
        """act = W_ih^T's rows picked by token id: x_t W_ih^T for all T*B rows in one gather."""
        w_ih_t = np.ascontiguousarray(self.p["w_ih_l0"].T)  # contiguous rows gather faster
        np.take(w_ih_t, self.ids, axis=0, out=self.act)

    def _weight_grads(self) -> None:
        """Every weight gradient as one GEMM over all T*B rows (W_ih's against the one-hot rows:
        numpy has no faster scatter-add, see NumpyBPTTGather)."""
        seq, batch, gh = self.act.shape
        g, hidden = self.g, gh // self.gates
        d_in, d_rec = self.d_in.reshape(seq * batch, gh), self.d_rec.reshape(seq * batch, gh)
        np.matmul(d_in.T, self.x_flat, out=g["w_ih_l0"])
        np.matmul(d_rec.T, self.hs[:-1].reshape(seq * batch, hidden), out=g["w_hh_l0"])
        np.add.reduce(d_in, axis=0, out=g["b_ih_l0"])
        np.add.reduce(d_rec, axis=0, out=g["b_hh_l0"])

    def loss_and_grads(self) -> tuple:
        return self.forward_backward(), self.g


class NumpyLSTM(NumpyGated):
    """LSTM forward + BPTT by hand: c_t = f c_{t-1} + i g, h_t = o tanh(c_t)."""

    name = "numpy by hand, token ids"
    gates = 4

    def __init__(self, weights, x, y, lr=LR):
        super().__init__(weights, x, y, lr)
        seq, batch, _ = x.shape
        hidden = self.hs.shape[-1]
        self.cs = np.zeros((seq + 1, batch, hidden), x.dtype)  # cs[0] is c_{-1} = 0
        self.tc = np.zeros((seq, batch, hidden), x.dtype)  # tanh(c_t), kept: backward reads it twice
        self.dc = np.zeros((batch, hidden), x.dtype)

    def forward_backward(self) -> float:
        p, hs, cs, tc, act = self.p, self.hs, self.cs, self.tc, self.act
        seq, batch, gh = act.shape
        H = gh // 4
        w_hh, w_hh_t = p["w_hh_l0"], p["w_hh_l0"].T
        s1, gates_h = self.s1, self.gh
        self._project_inputs()
        act += p["b_ih_l0"] + p["b_hh_l0"]
        for t in range(seq):
            a = act[t]
            np.matmul(hs[t], w_hh_t, out=gates_h)
            a += gates_h
            _sigmoid_(a[:, :2 * H])  # i, f
            np.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])  # g
            _sigmoid_(a[:, 3 * H:])  # o
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            np.multiply(f, cs[t], out=cs[t + 1])
            np.multiply(i, g, out=s1)
            cs[t + 1] += s1
            np.tanh(cs[t + 1], out=tc[t])
            np.multiply(o, tc[t], out=hs[t + 1])
        loss = self._head()
        dH = self.dH.reshape(seq, batch, H)
        dh, dh_next, dc, s2 = self.dh, self.dh_next, self.dc, self.s2
        dh_next[...] = 0
        dc[...] = 0  # holds dL/dc_t: what c_{t+1} sends back, then this step's own share
        for t in reversed(range(seq)):
            a, d = act[t], self.d_in[t]
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            di, df, dg, do = d[:, :H], d[:, H:2 * H], d[:, 2 * H:3 * H], d[:, 3 * H:]
            np.add(dH[t], dh_next, out=dh)
            np.multiply(dh, tc[t], out=do)  # do = dh tanh(c) o (1 - o)
            np.subtract(1, o, out=s1)
            s1 *= o
            do *= s1
            np.multiply(tc[t], tc[t], out=s1)  # dc += dh o (1 - tanh(c)^2)
            np.subtract(1, s1, out=s1)
            s1 *= o
            s1 *= dh
            dc += s1
            np.subtract(1, i, out=s1)  # di = dc g i (1 - i)
            s1 *= i
            np.multiply(dc, g, out=di)
            di *= s1
            np.subtract(1, f, out=s1)  # df = dc c_{t-1} f (1 - f)
            s1 *= f
            np.multiply(dc, cs[t], out=df)
            df *= s1
            np.multiply(g, g, out=s2)  # dg = dc i (1 - g^2)
            np.subtract(1, s2, out=s2)
            s2 *= i
            np.multiply(dc, s2, out=dg)
            dc *= f  # dL/dc_{t-1} through c_t = f c_{t-1} + ...
            np.matmul(d, w_hh, out=dh_next)
        self._weight_grads()
        return loss


class NumpyGRU(NumpyGated):
    """GRU forward + BPTT by hand, PyTorch's formula: r = sigmoid(x W_ir + b_ir + h W_hr + b_hr),
    z likewise, n = tanh(x W_in + b_in + r (h W_hn + b_hn)), h' = (1 - z) n + z h."""

    name = "numpy by hand, token ids"
    gates = 3

    def __init__(self, weights, x, y, lr=LR):
        super().__init__(weights, x, y, lr)
        seq, batch, _ = x.shape
        self.hn = np.zeros((seq, batch, self.hs.shape[-1]), x.dtype)  # h W_hn^T + b_hn of each step
        self.d_rec = np.zeros_like(self.d_in)  # differs from d_in in the n gate: r multiplies it

    def forward_backward(self) -> float:
        p, hs, hn, act = self.p, self.hs, self.hn, self.act
        seq, batch, gh = act.shape
        H = gh // 3
        w_hh, w_hh_t, b_hh = p["w_hh_l0"], p["w_hh_l0"].T, p["b_hh_l0"]
        s1, s2, gates_h = self.s1, self.s2, self.gh
        self._project_inputs()
        act += p["b_ih_l0"]
        for t in range(seq):
            a = act[t]
            np.matmul(hs[t], w_hh_t, out=gates_h)
            gates_h += b_hh
            a[:, :2 * H] += gates_h[:, :2 * H]
            _sigmoid_(a[:, :2 * H])  # r, z
            r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
            np.copyto(hn[t], gates_h[:, 2 * H:])
            np.multiply(r, hn[t], out=s1)
            n += s1
            np.tanh(n, out=n)
            np.subtract(hs[t], n, out=s1)  # h' = n + z (h - n)
            s1 *= z
            np.add(n, s1, out=hs[t + 1])
        loss = self._head()
        dH = self.dH.reshape(seq, batch, H)
        dh, dh_next = self.dh, self.dh_next
        dh_next[...] = 0
        for t in reversed(range(seq)):
            a, d, dr_ = act[t], self.d_in[t], self.d_rec[t]
            r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
            dr, dz, dn = d[:, :H], d[:, H:2 * H], d[:, 2 * H:]
            np.add(dH[t], dh_next, out=dh)
            np.subtract(hs[t], n, out=s1)  # dz = dh (h - n) z (1 - z)
            s1 *= dh
            np.subtract(1, z, out=s2)
            s2 *= z
            np.multiply(s1, s2, out=dz)
            np.subtract(1, z, out=s1)  # dn = dh (1 - z) (1 - n^2)
            s1 *= dh
            np.multiply(n, n, out=s2)
            np.subtract(1, s2, out=s2)
            np.multiply(s1, s2, out=dn)
            np.multiply(dn, r, out=dr_[:, 2 * H:])  # the recurrent side of n: r (h W_hn + b_hn)
            np.multiply(dn, hn[t], out=s1)  # dr = dn (h W_hn + b_hn) r (1 - r)
            np.subtract(1, r, out=s2)
            s2 *= r
            np.multiply(s1, s2, out=dr)
            np.copyto(dr_[:, :2 * H], d[:, :2 * H])
            np.matmul(dr_, w_hh, out=dh_next)  # dL/dh_{t-1}: through the gates, and through z h
            np.multiply(dh, z, out=s1)
            dh_next += s1
        self._weight_grads()
        return loss


class GatedGemms:
    """Only the matrix products of a hand-written gated step, same operands, same order: the
    recurrent GEMM of each step forward and back, the head's three, the two weight gradients.
    Mixed into NumpyLSTM / NumpyGRU, whose first step fills the buffers with realistic values."""

    name = "  its GEMMs alone"

    def __init__(self, weights, x, y, lr=LR):
        super().__init__(weights, x, y, lr)
        super().step()  # realistic values in every buffer (no denormals, no NaN)

    def step(self) -> float:
        p, g, hs = self.p, self.g, self.hs
        seq, batch, gh = self.act.shape
        hidden = gh // self.gates
        w_hh, w_hh_t = p["w_hh_l0"], p["w_hh_l0"].T
        for t in range(seq):
            np.matmul(hs[t], w_hh_t, out=self.gh)
        self._head_gemms()
        for t in reversed(range(seq)):
            np.matmul(self.d_rec[t], w_hh, out=self.dh_next)
        np.matmul(self.d_in.reshape(seq * batch, gh).T, self.x_flat, out=g["w_ih_l0"])
        np.matmul(self.d_rec.reshape(seq * batch, gh).T, hs[:-1].reshape(seq * batch, hidden), out=g["w_hh_l0"])
        return float("nan")

    def flops(self) -> int:
        seq, batch, gh = self.act.shape
        hidden, vocab = gh // self.gates, self.x.shape[-1]
        recurrent = seq * 2 * batch * gh * hidden * 3  # forward, dL/dh, dL/dW_hh
        return recurrent + 3 * 2 * seq * batch * hidden * vocab + 2 * seq * batch * gh * vocab  # head; dW_ih


class LSTMGemms(GatedGemms, NumpyLSTM):
    pass


class GRUGemms(GatedGemms, NumpyGRU):
    pass


HAND_WRITTEN = {"lstm": (NumpyLSTM, LSTMGemms), "gru": (NumpyGRU, GRUGemms)}


# ----------------------------------------------------------------------------- checks


def verify_gradients(cell: str, layers: int, torch_ok: bool, tol: float = 1e-9) -> dict:
    """float64, small sizes: every tinygrad_rnn row (and PyTorch's, if there) must give the
    reference's loss and gradients to `tol` relative (max abs difference / max abs value, per
    parameter). The reference is the hand-written step for 1 layer, tinygrad_rnn's plain op-by-op
    path (fast.disabled()) for more. Returns {row name: worst relative error}; exits on a failure."""
    import tinygrad_rnn as tg

    vocab, batch, seq, hidden = 11, 3, 7, 5
    x, y = make_data(seq, batch, vocab, dtype=np.float64)
    w = make_gated_weights(cell, hidden, layers, vocab, dtype=np.float64)
    if layers == 1:
        ref_loss, ref_g = HAND_WRITTEN[cell][0](w, x, y).loss_and_grads()
        ref_name = "the numpy step by hand"
    else:
        with tg.fast.disabled():
            ref_loss, ref_g = TinygradGated(cell, w, x, y, layers, ids=False).loss_and_grads()
        ref_name = f"{TG}'s plain path (fast.disabled())"
    rows = [TinygradGated(cell, w, x, y, layers, ids=ids) for ids in (False, True)]
    if layers == 1:
        rows += [TinygradGated(cell, w, x, y, ids=ids, loop=True) for ids in (True, False)]
    if torch_ok:
        rows += [TorchGated(cell, w, x, y, layers)] + ([TorchGated(cell, w, x, y, loop=True)] if layers == 1 else [])
    worst = {}
    for row in rows:
        loss, grads = row.loss_and_grads()
        errs = {"loss": abs(loss - ref_loss) / abs(ref_loss)}
        for k, ref in ref_g.items():
            errs[k] = float(np.abs(grads[k] - ref).max() / max(np.abs(ref).max(), 1e-300))
        worst[row.name] = max(errs.values())
        if not worst[row.name] <= tol:  # NaN fails too
            bad = ", ".join(f"{k} {v:.2e}" for k, v in errs.items())
            sys.exit(f"gradient check FAILED for {row.name} (tolerance {tol:g}): {bad}\n"
                     f"it does not compute what {ref_name} computes, so comparing their speed would mean nothing")
    print(f"gradient check, {KINDS[cell]}, {layers} layer(s), float64, against {ref_name} "
          f"(max relative error): " + "; ".join(f"{name} {err:.1e}" for name, err in worst.items()))
    return worst


def graph_memory(cell: str, weights: dict, x: np.ndarray, y: np.ndarray, layers: int) -> dict:
    """What tinygrad_rnn's layer (token ids) holds once the loss is computed, by tracemalloc
    (numpy and numba's runtime report their arrays to it), against `must_keep_bytes`."""
    model = TinygradGated(cell, weights, x, y, layers, ids=True)
    model.step()  # kernels compiled and loaded outside the trace
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        loss = model.loss()
        gc.collect()
        graph = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    del loss
    seq, batch, vocab = x.shape
    keep = must_keep_bytes(cell, seq, batch, weights["w_hh_l0"].shape[1], layers, vocab, x.itemsize)
    return {"graph_bytes": graph, "must_keep_bytes": keep, "ratio": graph / keep}


# ----------------------------------------------------------------------------- one table


def bench_table(cell: str, hidden: int, layers: int, steps: int, warmup: int, threads: int, torch_ok: bool,
                budget: float, pause: float = 0.0, block: int = 1) -> dict:
    x, y = make_data(SEQ, BATCH, VOCAB)
    w = make_gated_weights(cell, hidden, layers, VOCAB)
    kind = KINDS[cell]
    mem = graph_memory(cell, w, x, y, layers)
    layer_onehot = TinygradGated(cell, w, x, y, layers, ids=False)
    rows = [layer_onehot, TinygradGated(cell, w, x, y, layers, ids=True)]
    if layers == 1:
        rows += [TinygradGated(cell, w, x, y, ids=True, loop=True), TinygradGated(cell, w, x, y, ids=False, loop=True)]
    torch_fused = None
    if torch_ok:
        torch_fused = TorchGated(cell, w, x, y, layers, threads=threads)
        rows.append(torch_fused)
        if layers == 1:
            rows.append(TorchGated(cell, w, x, y, loop=True, threads=threads))
    gemms = None
    if layers == 1:
        by_hand, gemms_cls = HAND_WRITTEN[cell]
        gemms = gemms_cls(w, x, y)
        rows += [by_hand(w, x, y), gemms]
    times, first_loss = run_interleaved(rows, warmup, steps, budget, min(steps, MIN_STEPS), pause, block)
    steps = len(times[rows[0].name])
    tokens = SEQ * BATCH
    tps = {r.name: tokens / statistics.median(times[r.name]) for r in rows}
    base = tps[layer_onehot.name]
    header = ["variant", "median ms", "min ms", "IQR", "tokens/s"] + (["vs torch fused"] if torch_fused else []) + \
             [f"vs {TG} layer"]
    result = {"cell": cell, "hidden": hidden, "layers": layers, "steps": steps, "warmup": warmup,
              "pause_s": pause, "block": block, "memory": mem, "rows": {}}
    table = []
    for r in rows:
        ts = sorted(times[r.name])
        med = statistics.median(ts)
        q1, q3 = ts[len(ts) // 4], ts[(3 * len(ts)) // 4]
        entry = dict(median_s=med, min_s=ts[0], iqr_s=q3 - q1, tokens_per_s=tps[r.name],
                     ratio_to_tinygrad_rnn_layer=tps[r.name] / base, times_s=times[r.name],
                     first_loss=None if np.isnan(first_loss[r.name]) else first_loss[r.name])
        line = [r.name, f"{med * 1e3:.2f}", f"{ts[0] * 1e3:.2f}", f"{100 * (q3 - q1) / med:.0f}%", f"{tps[r.name]:,.0f}"]
        if torch_fused:
            entry["ratio_to_torch_fused"] = tps[r.name] / tps[torch_fused.name]
            line.append(f"{entry['ratio_to_torch_fused']:.2f}x")
        line.append(f"{tps[r.name] / base:.2f}x")
        result["rows"][r.name.strip()] = entry
        table.append(line)
    losses = [v for v in first_loss.values() if not np.isnan(v)]
    result["first_loss_spread"] = max(losses) - min(losses)

    print(f"\n{kind}, H={hidden}, {layers} layer{'s' if layers > 1 else ''}  (V={VOCAB}, B={BATCH}, T={SEQ}, "
          f"float32; median of {steps} steps, rows interleaved in turns of {block} after {warmup} warm-up, "
          f"{pause:g} s pause between turns; threads: {threads})")
    print_table(header, table)
    notes = []
    if torch_fused:
        ids_row = rows[1].name
        result["headline_ratio"] = base / tps[torch_fused.name]
        notes.append(f"{TG} nn.{kind} / torch nn.{kind}, one-hot to both: {result['headline_ratio']:.2f}x "
                     f"(token ids to ours: {tps[ids_row] / tps[torch_fused.name]:.2f}x)")
    if gemms:
        result["rows"][gemms.name.strip()]["gflops"] = gemms.flops() / statistics.median(times[gemms.name]) / 1e9
        notes.append(f"GEMMs alone at {result['rows'][gemms.name.strip()]['gflops']:.1f} GFLOP/s")
    notes.append(f"first-step losses agree to {result['first_loss_spread']:.1e} across rows")
    print("  " + "; ".join(notes))
    mib = 1 / 2**20
    print(f"  memory: {TG} nn.{kind}'s graph after forward (token ids, tracemalloc) holds "
          f"{mem['graph_bytes'] * mib:.1f} MiB = {mem['ratio']:.2f}x the {mem['must_keep_bytes'] * mib:.1f} MiB "
          f"the step must keep ({'h, c, i, f, g, o' if cell == 'lstm' else 'h, r, z, n, W_hn h + b_hn'} "
          f"per layer and step, and the T*B*V softmax)")
    return result


def print_summary(results: list, torch_ok: bool) -> None:
    """One line per table, the columns of the speed issue's table plus memory."""
    header = ["cell", "H", "layers"] + (["torch fused tokens/s"] if torch_ok else []) + \
             [f"{TG} layer tokens/s (one-hot)"] + (["ratio", "ratio, token ids"] if torch_ok else []) + ["graph / must keep"]
    rows = []
    for res in results:
        kind = KINDS[res["cell"]]
        r = res["rows"]
        ours = r[f"{TG} nn.{kind}, one-hot"]["tokens_per_s"]
        line = [kind, str(res["hidden"]), str(res["layers"])]
        if torch_ok:
            torch_tps = r[f"torch nn.{kind} (fused), one-hot"]["tokens_per_s"]
            line.append(f"{torch_tps:,.0f}")
        line.append(f"{ours:,.0f}")
        if torch_ok:
            line += [f"{ours / torch_tps:.2f}x", f"{r[f'{TG} nn.{kind}, token ids']['tokens_per_s'] / torch_tps:.2f}x"]
        line.append(f"{res['memory']['ratio']:.2f}x")
        rows.append(line)
    print("\nsummary (tokens/s, one-hot to both unless said):")
    print_table(header, rows)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", choices=sorted(KINDS), nargs="+", help="cells to time (default: lstm gru)")
    ap.add_argument("--quick", action="store_true", help="smoke run of a few seconds: H=64, 3 steps")
    ap.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (default 64 256 1024; 64 with --quick)")
    ap.add_argument("--layers", type=int, default=1,
                    help="stacked layers (default 1; with more, the cell-loop and hand-written rows are left out)")
    ap.add_argument("--steps", type=int, help="timed steps per table (default 80/50/25 by H; 3 with --quick)")
    ap.add_argument("--warmup", type=int, help="untimed repetitions first (default 3; 1 with --quick)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds per table after which timing stops once 20 steps are in (default 60)")
    ap.add_argument("--threads", type=int, help="threads for BLAS and torch (default: the CPUs we may use)")
    ap.add_argument("--pause", type=float,
                    help="seconds of sleep before each row's turn, so the previous row's spinning "
                         "BLAS/OpenMP threads go idle (default 0.25; 0 with --quick)")
    ap.add_argument("--block", type=int, help="consecutive timed steps per row's turn (default 5; 1 with --quick)")
    ap.add_argument("--no-torch", action="store_true", help="leave out the PyTorch rows")
    ap.add_argument("--json", metavar="PATH", help="also write every number to PATH")
    args = ap.parse_args(argv)
    if args.layers < 1:
        ap.error("--layers must be at least 1")

    threads, hidden, warmup, pause, block, torch_ok, torch_note, busy = start_run(args, "gated char-LM step",
                                                                                  __file__)
    cells = args.cell or ["lstm", "gru"]
    import numba

    t_start = time.perf_counter()
    results = {"config": dict(vocab=VOCAB, batch=BATCH, seq=SEQ, lr=LR, layers=args.layers, threads=threads,
                              quick=args.quick, python=platform.python_version(), numpy=np.__version__,
                              numba=numba.__version__, torch=torch_note, busy_before=busy,
                              load_before=os.getloadavg()),
               "gradient_check_max_rel_err": {}, "tables": []}
    for cell in cells:
        results["gradient_check_max_rel_err"][cell] = verify_gradients(cell, args.layers, torch_ok)
    for cell in cells:
        for h in hidden:
            steps = args.steps or (3 if args.quick else default_steps(h))
            results["tables"].append(bench_table(cell, h, args.layers, steps, warmup, threads, torch_ok,
                                                 args.budget, pause, block))
    print_summary(results["tables"], torch_ok)
    finish_run(results, t_start, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
