"""The project's speed benchmark: one training step of a character-level RNN language model.

    python benchmarks/charlm_step.py                    # full run (1-4 minutes on 2 cores, by load)
    python benchmarks/charlm_step.py --quick            # smoke run of a few seconds (CI, tests)
    python benchmarks/charlm_step.py --hidden 256 --steps 40 --json results.json

The "charlm step": vocabulary 65, batch 32, sequence length 64, float32, one tanh RNN layer,
h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) on one-hot x_t, a Linear head on every
h_t, mean cross-entropy over all 2,048 positions, full backward (BPTT), one SGD update.
Throughput = 2,048 tokens / median step time.

Rows of each table (timed round-robin in turns of a few steps, the order rotating, so that
whatever else the machine does hits every row alike). The input is the same tokens either as
one-hot rows x_t or as token ids; one_hot(ids) @ W_ih^T is a row gather of W_ih^T, the same
math, so every row computes the same losses and gradients:

- tinygrad_rnn as a user writes it (nn.RNNCell in a Python loop, nn.Linear, cross_entropy,
  backward, optim.SGD): fed token ids (the cell gathers) and fed one-hot rows, on the numba
  backend, and fed token ids on the numpy reference backend;
- the same model written by hand in numpy (forward + BPTT, preallocated buffers): the floor a
  per-op framework on numpy can hope for. Once on one-hot rows with the per-step products the
  cell loop issues, once on token ids written for speed (gather, weight gradients as one GEMM
  each). At startup every tinygrad_rnn variant's and the second one's float64 gradients are
  checked against the first's to 1e-9 relative, so the rows compute the same thing;
- the matrix products of each hand-written step alone (same shapes, same calls): compute floors;
- PyTorch, with as many threads as numpy's BLAS uses: torch.nn.RNNCell in a Python loop and the
  fused torch.nn.RNN on one-hot rows, and an embedding lookup + Python loop on token ids (neither
  nn.RNNCell nor nn.RNN takes ids). Optional: `pip install torch==2.13.0` enables these rows.

Then: numba compile cost (a fresh process doing import + one step, with an empty and with a
filled NUMBA_CACHE_DIR), `import tinygrad_rnn` alone, and tracemalloc's peak for forward +
backward at T=1,000 against the hidden-state activations a step must keep.

Ratios are printed, never asserted: they depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from machine import busy_fraction

# like the trainer, the benchmarks keep freed memory in malloc (tinygrad_rnn/fast/malloc.py);
# set before tinygrad_rnn is imported, here or in the subprocesses that inherit it
os.environ.setdefault("TINYGRAD_RNN_MALLOC", "retain")

VOCAB, BATCH, SEQ = 65, 32, 64
LR = 0.01  # small enough that hundreds of steps on one fixed batch stay finite (NaN/inf are slow)
SEED = 1234
MIN_STEPS = 20  # the fewest timed steps a median is taken over, whatever the time budget says
TG = "tinygrad_rnn"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# ----------------------------------------------------------------------------- the problem


def make_data(seq: int, batch: int, vocab: int, seed: int = SEED, dtype=np.float32):
    """One-hot inputs (seq, batch, vocab) and next-token targets (seq * batch,), time-major like
    the stacked RNN outputs they are compared with."""
    tokens = np.random.default_rng(seed).integers(0, vocab, size=(seq + 1, batch))
    x = np.zeros((seq, batch, vocab), dtype)
    np.put_along_axis(x, tokens[:-1, :, None], 1, axis=2)
    return x, tokens[1:].reshape(-1).astype(np.int64)


def make_weights(hidden: int, vocab: int, seed: int = SEED + 1, dtype=np.float32) -> dict:
    """PyTorch's init, U(-1/sqrt(fan), 1/sqrt(fan)); every row loads these same numbers."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden)

    def u(*shape):
        return rng.uniform(-bound, bound, shape).astype(dtype)

    return dict(w_ih=u(hidden, vocab), w_hh=u(hidden, hidden), b_ih=u(hidden), b_hh=u(hidden),
                w_out=u(vocab, hidden), b_out=u(vocab))


# ----------------------------------------------------------------------------- the rows


class Row:
    """One variant of the step. `before`/`after` run outside the clock."""

    name = "?"

    def before(self):
        pass

    def after(self):
        pass

    def step(self) -> float:
        raise NotImplementedError


class TinygradStep(Row):
    """The step as a user writes it: nothing here knows about BPTT."""

    def __init__(self, weights: dict, x: np.ndarray, y: np.ndarray, lr: float = LR, backend: str = "numba",
                 ids: bool = True):
        import tinygrad_rnn as tg
        from tinygrad_rnn import nn, optim

        self.tg, self.F, self.backend = tg, nn.functional, backend
        self.name = f"{TG}, {'token ids' if ids else 'one-hot'} ({backend} backend)"
        hidden, vocab = weights["w_hh"].shape[0], weights["w_out"].shape[0]
        self.cell, self.head = nn.RNNCell(vocab, hidden), nn.Linear(hidden, vocab)
        dtype = x.dtype
        for p, key in ((self.cell.weight_ih, "w_ih"), (self.cell.weight_hh, "w_hh"),
                       (self.cell.bias_ih, "b_ih"), (self.cell.bias_hh, "b_hh"),
                       (self.head.weight, "w_out"), (self.head.bias, "b_out")):
            p.data = np.array(weights[key], dtype=dtype)
        # token ids (T, B) or the one-hot rows (T, B, V): the cell takes either, same numbers
        self.x, self.y = (x.argmax(-1) if ids else tg.Tensor(x)), y
        self.params = list(self.cell.parameters()) + list(self.head.parameters())
        self.opt = optim.SGD(self.params, lr=lr)

    def before(self):
        if self.backend != "numba":
            self.tg.set_backend(self.backend)

    def after(self):
        if self.backend != "numba":
            self.tg.set_backend("numba")

    def loss(self):
        h, outs = None, []
        for t in range(self.x.shape[0]):
            h = self.cell(self.x[t], h)
            outs.append(h)
        hs = self.tg.stack(outs)
        logits = self.head(hs.reshape(-1, hs.shape[-1]))
        return self.F.cross_entropy(logits, self.y)

    def step(self) -> float:
        loss = self.loss()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return float(loss.data)

    def grads(self) -> dict:
        keys = ("w_ih", "w_hh", "b_ih", "b_hh", "w_out", "b_out")
        return {k: p.grad.data for k, p in zip(keys, self.params)}


class NumpyBPTT(Row):
    """Forward and BPTT written out in numpy, every buffer allocated once: per-step matmuls of the
    same shapes the RNNCell loop issues, so the gap to it is pure framework cost."""

    name = "numpy by hand, one-hot"

    def __init__(self, weights: dict, x: np.ndarray, y: np.ndarray, lr: float = LR):
        self.p = {k: np.array(v, dtype=x.dtype) for k, v in weights.items()}
        self.x, self.y, self.lr = x, y, lr
        seq, batch, vocab = x.shape
        hidden = self.p["w_hh"].shape[0]
        e = lambda *s: np.zeros(s, x.dtype)  # noqa: E731
        self.hs = e(seq + 1, batch, hidden)  # hs[0] is h_{-1} = 0, never written
        self.a, self.tmp = e(batch, hidden), e(batch, hidden)
        self.logits, self.dH = e(seq * batch, vocab), e(seq * batch, hidden)
        self.dh, self.da, self.dh_next = e(batch, hidden), e(batch, hidden), e(batch, hidden)
        self.tmp_ih, self.tmp_hh, self.tmp_b = e(hidden, vocab), e(hidden, hidden), e(hidden)
        self.g = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.rows = np.arange(seq * batch)

    def forward_backward(self) -> float:
        p, g, x, hs = self.p, self.g, self.x, self.hs
        seq, batch, _ = x.shape
        w_ih_t, w_hh_t, b = p["w_ih"].T, p["w_hh"].T, p["b_ih"] + p["b_hh"]
        a, tmp = self.a, self.tmp
        for t in range(seq):
            np.matmul(x[t], w_ih_t, out=a)
            np.matmul(hs[t], w_hh_t, out=tmp)
            a += tmp
            a += b
            np.tanh(a, out=hs[t + 1])
        loss = self._head()
        dH = self.dH.reshape(seq, batch, -1)
        dh, da, dh_next = self.dh, self.da, self.dh_next
        dh_next[...] = 0
        for k in ("w_ih", "w_hh", "b_ih"):
            g[k][...] = 0
        for t in reversed(range(seq)):
            np.add(dH[t], dh_next, out=dh)
            h = hs[t + 1]
            np.multiply(h, h, out=da)
            np.subtract(1, da, out=da)
            da *= dh
            np.matmul(da.T, x[t], out=self.tmp_ih)
            g["w_ih"] += self.tmp_ih
            np.matmul(da.T, hs[t], out=self.tmp_hh)
            g["w_hh"] += self.tmp_hh
            np.add.reduce(da, axis=0, out=self.tmp_b)
            g["b_ih"] += self.tmp_b
            np.matmul(da, p["w_hh"], out=dh_next)
        g["b_hh"][...] = g["b_ih"]
        return loss

    def _head_gemms(self) -> None:
        """The head's three products alone (logits, dL/dW_out, dL/d(states)), as `_head` makes them."""
        p, g, hs = self.p, self.g, self.hs
        flat, z = hs[1:].reshape(-1, hs.shape[-1]), self.logits
        np.matmul(flat, p["w_out"].T, out=z)
        np.matmul(z.T, flat, out=g["w_out"])
        np.matmul(z, p["w_out"], out=self.dH)

    def _head(self) -> float:
        """Logits of every state, mean cross-entropy; leaves dL/dW_out, dL/db_out in self.g and
        dL/d(states) in self.dH."""
        p, g, hs = self.p, self.g, self.hs
        seq, batch = hs.shape[0] - 1, hs.shape[1]
        flat = hs[1:].reshape(seq * batch, -1)
        z = self.logits
        np.matmul(flat, p["w_out"].T, out=z)
        z += p["b_out"]
        z -= z.max(axis=1, keepdims=True)
        picked = z[self.rows, self.y]  # a copy: z becomes the softmax below
        np.exp(z, out=z)
        total = z.sum(axis=1, keepdims=True)
        n = seq * batch
        loss = float(np.log(total).sum() - picked.sum()) / n
        z /= total
        z[self.rows, self.y] -= 1
        z /= n  # z is now dL/dlogits
        np.matmul(z.T, flat, out=g["w_out"])
        np.add.reduce(z, axis=0, out=g["b_out"])
        np.matmul(z, p["w_out"], out=self.dH)
        return loss

    def step(self) -> float:
        loss = self.forward_backward()
        for k, w in self.p.items():
            self.g[k] *= self.lr
            w -= self.g[k]
        return loss


class NumpyBPTTGather(NumpyBPTT):
    """The same step fed token ids, written as a careful numpy programmer would: the input
    projection a row gather of W_ih^T, each step's dL/dpre kept, and every weight gradient one
    GEMM over all steps at the end (W_ih's against the one-hot rows: numpy has no faster
    scatter-add, np.add.at over the 2,048 rows took 8x that GEMM's time at H=256)."""

    name = "numpy by hand, token ids"

    def __init__(self, weights: dict, x: np.ndarray, y: np.ndarray, lr: float = LR):
        super().__init__(weights, x, y, lr)
        seq, batch, vocab = x.shape
        self.ids = x.argmax(-1)
        self.x_flat = x.reshape(seq * batch, vocab)
        self.d_pre = np.zeros((seq, batch, self.p["w_hh"].shape[0]), x.dtype)

    def forward_backward(self) -> float:
        p, g, hs, ids = self.p, self.g, self.hs, self.ids
        seq, batch, hidden = self.d_pre.shape
        w_ih_t, w_hh_t, b = p["w_ih"].T, p["w_hh"].T, p["b_ih"] + p["b_hh"]
        a, tmp = self.a, self.tmp
        for t in range(seq):
            np.matmul(hs[t], w_hh_t, out=tmp)
            np.add(w_ih_t[ids[t]], tmp, out=a)
            a += b
            np.tanh(a, out=hs[t + 1])
        loss = self._head()
        dH = self.dH.reshape(seq, batch, -1)
        dh, dh_next = self.dh, self.dh_next
        dh_next[...] = 0
        for t in reversed(range(seq)):
            np.add(dH[t], dh_next, out=dh)
            h, da = hs[t + 1], self.d_pre[t]
            np.multiply(h, h, out=da)
            np.subtract(1, da, out=da)
            da *= dh
            np.matmul(da, p["w_hh"], out=dh_next)
        d_flat = self.d_pre.reshape(seq * batch, hidden)
        np.matmul(d_flat.T, self.x_flat, out=g["w_ih"])
        np.matmul(d_flat.T, hs[:-1].reshape(seq * batch, hidden), out=g["w_hh"])
        np.add.reduce(d_flat, axis=0, out=g["b_ih"])
        g["b_hh"][...] = g["b_ih"]
        return loss


class GemmsOnly(NumpyBPTT):
    """Only the matrix products of NumpyBPTT's step, same operands, same transposes, same order."""

    name = "  its GEMMs alone"

    def __init__(self, weights, x, y, lr=LR):
        super().__init__(weights, x, y, lr)
        super().step()  # realistic values in every buffer (no denormals, no NaN)

    def step(self) -> float:
        p, x, hs = self.p, self.x, self.hs
        seq, batch, _ = x.shape
        w_ih_t, w_hh_t = p["w_ih"].T, p["w_hh"].T
        for t in range(seq):
            np.matmul(x[t], w_ih_t, out=self.a)
            np.matmul(hs[t], w_hh_t, out=self.tmp)
        self._head_gemms()
        for t in reversed(range(seq)):
            np.matmul(self.da.T, x[t], out=self.tmp_ih)
            np.matmul(self.da.T, hs[t], out=self.tmp_hh)
            np.matmul(self.da, p["w_hh"], out=self.dh_next)
        return float("nan")

    @staticmethod
    def flops(seq, batch, vocab, hidden) -> int:
        per_t = 2 * batch * hidden * (vocab + hidden) * 2 + 2 * batch * hidden * hidden  # fwd 2, bwd 3
        return seq * per_t + 3 * 2 * seq * batch * hidden * vocab  # head: fwd, dW_out, dH


class GemmsOnlyGather(NumpyBPTTGather):
    """Only the matrix products of NumpyBPTTGather's step."""

    name = "  its GEMMs alone (ids)"

    def __init__(self, weights, x, y, lr=LR):
        super().__init__(weights, x, y, lr)
        super().step()

    def step(self) -> float:
        p, g, hs = self.p, self.g, self.hs
        seq, batch, hidden = self.d_pre.shape
        w_hh_t = p["w_hh"].T
        for t in range(seq):
            np.matmul(hs[t], w_hh_t, out=self.tmp)
        self._head_gemms()
        for t in reversed(range(seq)):
            np.matmul(self.d_pre[t], p["w_hh"], out=self.dh_next)
        d_flat = self.d_pre.reshape(seq * batch, hidden)
        np.matmul(d_flat.T, self.x_flat, out=g["w_ih"])
        np.matmul(d_flat.T, hs[:-1].reshape(seq * batch, hidden), out=g["w_hh"])
        return float("nan")

    @staticmethod
    def flops(seq, batch, vocab, hidden) -> int:
        recurrent = seq * 2 * batch * hidden * hidden * 3  # forward, dh, dW_hh
        return recurrent + 4 * 2 * seq * batch * hidden * vocab  # head fwd, dW_out, dH; dW_ih


class TorchStep(Row):
    """PyTorch on the one-hot rows: nn.RNNCell in a Python loop, or the fused nn.RNN."""

    def __init__(self, weights, x, y, lr=LR, threads=1, fused=False):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.fused = torch, fused
        self.name = "torch nn.RNN (fused)" if fused else "torch nn.RNNCell loop"
        hidden, vocab = weights["w_hh"].shape[0], weights["w_out"].shape[0]
        self.rnn = torch.nn.RNN(vocab, hidden) if fused else torch.nn.RNNCell(vocab, hidden)
        self.head = torch.nn.Linear(hidden, vocab)
        sfx = "_l0" if fused else ""
        with torch.no_grad():
            for key, name in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")):
                getattr(self.rnn, name + sfx).copy_(torch.from_numpy(weights[key]))
            self.head.weight.copy_(torch.from_numpy(weights["w_out"]))
            self.head.bias.copy_(torch.from_numpy(weights["b_out"]))
        self.x, self.y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
        self.opt = torch.optim.SGD(list(self.rnn.parameters()) + list(self.head.parameters()), lr=lr)

    def step(self) -> float:
        torch = self.torch
        if self.fused:
            out, _ = self.rnn(self.x)
        else:
            h, outs = None, []
            for t in range(self.x.shape[0]):
                h = self.rnn(self.x[t], h)
                outs.append(h)
            out = torch.stack(outs)
        loss = torch.nn.functional.cross_entropy(self.head(out.reshape(-1, out.shape[-1])), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return float(loss.detach())


class TorchEmbeddingStep(Row):
    """PyTorch fed token ids, the same math through an embedding lookup: W_ih^T's rows gathered
    for all steps at once (F.embedding, whose backward scatter-adds) plus both biases, then the
    recurrence h = tanh(x_t + F.linear(h, W_hh)) in a Python loop. nn.RNNCell and the fused
    nn.RNN take only feature vectors, so this is the fastest same-math PyTorch row with ids."""

    name = "torch embedding + loop, token ids"

    def __init__(self, weights, x, y, lr=LR, threads=1):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.F = torch, torch.nn.functional
        t = lambda a: torch.nn.Parameter(torch.from_numpy(np.array(a)))  # noqa: E731
        self.w_ih_t, self.w_hh, self.b_ih, self.b_hh = t(weights["w_ih"].T), t(weights["w_hh"]), t(weights["b_ih"]), t(weights["b_hh"])
        self.w_out, self.b_out = t(weights["w_out"]), t(weights["b_out"])
        self.ids, self.y = torch.from_numpy(x.argmax(-1)), torch.from_numpy(y)
        self.opt = torch.optim.SGD([self.w_ih_t, self.w_hh, self.b_ih, self.b_hh, self.w_out, self.b_out], lr=lr)

    def step(self) -> float:
        F = self.F
        xs = F.embedding(self.ids, self.w_ih_t) + (self.b_ih + self.b_hh)
        h, outs = None, []
        for t in range(xs.shape[0]):  # h_{-1} = 0
            h = self.torch.tanh(xs[t] if h is None else xs[t] + F.linear(h, self.w_hh))
            outs.append(h)
        out = self.torch.stack(outs)
        loss = F.cross_entropy(F.linear(out.reshape(-1, out.shape[-1]), self.w_out, self.b_out), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        return float(loss.detach())


# ----------------------------------------------------------------------------- checks


def verify_gradients(tol: float = 1e-9) -> dict:
    """float64, small sizes: tinygrad_rnn (each backend) and NumpyBPTT must agree to `tol`
    relative (max abs difference / max abs value, per parameter)."""
    import tinygrad_rnn as tg

    vocab, batch, seq, hidden = 11, 3, 7, 5
    x, y = make_data(seq, batch, vocab, dtype=np.float64)
    w = make_weights(hidden, vocab, dtype=np.float64)
    ref = NumpyBPTT(w, x, y)
    ref_loss = ref.forward_backward()

    def rel_errors(loss, grads):
        errs = {"loss": abs(loss - ref_loss) / abs(ref_loss)}
        for k, gr in grads.items():
            errs[k] = float(np.abs(gr - ref.g[k]).max() / max(np.abs(ref.g[k]).max(), 1e-300))
        return errs

    worst = {}
    for backend, ids in (("numba", True), ("numba", False), ("numpy", True)):
        tg.set_backend(backend)
        try:
            model = TinygradStep(w, x, y, backend=backend, ids=ids)
            loss = model.loss()
            loss.backward()
            worst[model.name] = rel_errors(float(loss.data), model.grads())
        finally:
            tg.set_backend("numba")
    gather = NumpyBPTTGather(w, x, y)
    worst[gather.name] = rel_errors(gather.forward_backward(), gather.g)
    for name, errs in worst.items():
        worst[name] = max(errs.values())
        if worst[name] > tol or not np.isfinite(worst[name]):
            bad = ", ".join(f"{k} {v:.2e}" for k, v in errs.items())
            sys.exit(f"gradient check FAILED for {name} (tolerance {tol:g}): {bad}\n"
                     "it does not compute what the hand-written numpy step computes, "
                     "so comparing their speed would mean nothing")
    return worst


# ----------------------------------------------------------------------------- timing


def run_interleaved(rows: list, warmup: int, steps: int, budget: float, min_steps: int,
                    pause: float = 0.0, block: int = 1) -> tuple[dict, dict]:
    """Seconds per step for every row. Rows take turns in blocks of `block` consecutive steps,
    each step timed on its own; the order rotates each round so no row always follows the same
    neighbour. Past `budget` seconds, stops as soon as `min_steps` timed steps are in per row (a
    loaded machine can make steps 100x slower).

    `pause` seconds of sleep (off the clock) before each block let the previous row's worker
    threads go idle. OpenBLAS's threads keep spinning for ~0.1 s after a call, and PyTorch's
    OpenMP threads for a while too: a torch step started 0, 10, 50, 100, 200 ms after numpy's
    GEMMs took 113, 109, 68, 18, 15 ms at H=256 (measured here), so timing the libraries
    step-by-step interleaved without a pause mostly timed the fight between their thread pools."""
    times = {r.name: [] for r in rows}
    first_loss = {}
    t_end = time.perf_counter() + budget
    done, rnd = 0, 0
    while done < warmup + steps:
        if done >= warmup + min_steps and time.perf_counter() > t_end:
            break
        n = block if done >= warmup else warmup
        k = rnd % len(rows)
        for r in rows[k:] + rows[:k]:
            if pause:
                time.sleep(pause)
            r.before()
            for _ in range(n):
                t0 = time.perf_counter()
                loss = r.step()
                dt = time.perf_counter() - t0
                first_loss.setdefault(r.name, loss)
                if done >= warmup:
                    times[r.name].append(dt)
            r.after()
        done, rnd = done + n, rnd + 1
    return times, first_loss


def default_steps(hidden: int) -> int:
    # keeps the full run within a few minutes on 2 cores; never below 20 for the median
    return 80 if hidden <= 64 else 50 if hidden <= 256 else 25


def bench_hidden(hidden: int, steps: int, warmup: int, threads: int, torch_ok: bool, budget: float,
                 pause: float = 0.0, block: int = 1) -> dict:
    x, y = make_data(SEQ, BATCH, VOCAB)
    w = make_weights(hidden, VOCAB)
    rows = [TinygradStep(w, x, y), TinygradStep(w, x, y, ids=False), TinygradStep(w, x, y, backend="numpy"),
            NumpyBPTT(w, x, y), GemmsOnly(w, x, y), NumpyBPTTGather(w, x, y), GemmsOnlyGather(w, x, y)]
    if torch_ok:
        rows += [TorchStep(w, x, y, threads=threads), TorchStep(w, x, y, threads=threads, fused=True),
                 TorchEmbeddingStep(w, x, y, threads=threads)]
    times, first_loss = run_interleaved(rows, warmup, steps, budget, min(steps, MIN_STEPS), pause, block)
    steps = len(times[rows[0].name])
    tokens = SEQ * BATCH
    base = tokens / statistics.median(times[rows[0].name])
    result = {"hidden": hidden, "steps": steps, "warmup": warmup, "pause_s": pause, "block": block, "rows": {}}
    table = []
    for r in rows:
        ts = sorted(times[r.name])
        med = statistics.median(ts)
        q1, q3 = ts[len(ts) // 4], ts[(3 * len(ts)) // 4]
        tps = tokens / med
        result["rows"][r.name.strip()] = dict(
            median_s=med, min_s=ts[0], iqr_s=q3 - q1, tokens_per_s=tps, ratio_to_tinygrad_rnn=tps / base,
            first_loss=None if np.isnan(first_loss[r.name]) else first_loss[r.name], times_s=times[r.name])
        table.append([r.name, f"{med * 1e3:.2f}", f"{ts[0] * 1e3:.2f}", f"{100 * (q3 - q1) / med:.0f}%",
                      f"{tps:,.0f}", f"{tps / base:.2f}x"])
    for cls in (GemmsOnly, GemmsOnlyGather):
        gemm = result["rows"][cls.name.strip()]
        gemm["gflops"] = cls.flops(SEQ, BATCH, VOCAB, hidden) / gemm["median_s"] / 1e9
    losses = [v for v in first_loss.values() if not np.isnan(v)]
    result["first_loss_spread"] = max(losses) - min(losses)

    print(f"\nH={hidden}  (V={VOCAB}, B={BATCH}, T={SEQ}, float32; median of {steps} steps, rows "
          f"interleaved in turns of {block} after {warmup} warm-up, {pause:g} s pause between turns; "
          f"threads: {threads})")
    print_table(["variant", "median ms", "min ms", "IQR", "tokens/s", f"vs {TG}"], table)
    print(f"  GEMMs alone run at {result['rows'][GemmsOnly.name.strip()]['gflops']:.1f} GFLOP/s "
          f"(one-hot) and {gemm['gflops']:.1f} (token ids); first-step losses agree to "
          f"{result['first_loss_spread']:.1e} across rows")
    return result


def print_table(header: list, rows: list) -> None:
    cells = [header] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


# ----------------------------------------------------------------------------- compile and import

# Runs in a fresh interpreter; the clock starts before anything is imported.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import tinygrad_rnn
t1 = time.perf_counter()
out = {"import_s": t1 - t0}
if sys.argv[1] == "step":
    sys.path.insert(0, sys.argv[2])
    import charlm_step as cs
    x, y = cs.make_data(cs.SEQ, cs.BATCH, cs.VOCAB)
    cs.TinygradStep(cs.make_weights(64, cs.VOCAB), x, y).step()
    out["first_step_s"] = time.perf_counter() - t1
    out["total_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def run_child(mode: str, cache_dir: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_DISABLE_JIT", "TINYGRAD_RNN_BACKEND")}
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD, mode, os.path.dirname(os.path.abspath(__file__))],
                         capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"child process failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def bench_startup(quick: bool) -> dict:
    result = {"import": [run_child("import") for _ in range(3)]}
    imp = statistics.median(r["import_s"] for r in result["import"])
    result["import_median_s"] = imp
    print(f"\nimport {TG} alone (fresh process, median of 3): {imp * 1e3:.0f} ms")
    if quick:
        print("numba compile time: skipped under --quick (a cold cache compiles every kernel)")
        return result
    with tempfile.TemporaryDirectory(prefix="charlm_numba_cache_") as cache:
        result["cold"] = run_child("step", cache)
        result["warm"] = run_child("step", cache)
    for label, key in (("cold cache (empty NUMBA_CACHE_DIR)", "cold"), ("warm cache (same dir again)", "warm")):
        r = result[key]
        print(f"import + first step at H=64, {label}: {r['total_s']:.2f} s "
              f"(import {r['import_s']:.2f} s + first step {r['first_step_s']:.2f} s; "
              f"process wall {r['process_wall_s']:.2f} s)")
    return result


# ----------------------------------------------------------------------------- memory


def bench_memory(seq: int, hidden: int) -> dict:
    """What the recorded graph holds once the loss is computed (the activations kept for
    backward), and tracemalloc's peak over forward + backward (those plus the gradients in
    flight); numpy (and numba's runtime) report their array allocations to tracemalloc."""
    x, y = make_data(seq, BATCH, VOCAB)
    w = make_weights(hidden, VOCAB)
    TinygradStep(w, *make_data(4, BATCH, VOCAB)).step()  # compile/load kernels outside the trace
    model = TinygradStep(w, x, y)
    needed = BATCH * seq * hidden * 4
    out = {"seq": seq, "batch": BATCH, "hidden": hidden, "hidden_states_bytes": needed}
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        loss = model.loss()
        gc.collect()
        out["tinygrad_rnn_graph_bytes"] = tracemalloc.get_traced_memory()[0] - start  # what the graph holds
        loss.backward()
        out["tinygrad_rnn_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        del loss
        gc.collect()
        tracemalloc.reset_peak()
        ref = NumpyBPTT(w, x, y)  # its buffers are allocated here, so they count
        ref.forward_backward()
        out["numpy_bptt_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    mb = 1 / 2**20
    print(f"\nmemory, T={seq}, B={BATCH}, H={hidden} (tracemalloc), against the {needed * mb:.1f} MiB of "
          f"hidden states (B*T*H*4 bytes): the graph after forward holds "
          f"{out['tinygrad_rnn_graph_bytes'] * mb:.1f} MiB = {out['tinygrad_rnn_graph_bytes'] / needed:.2f}x")
    print(f"peak memory of forward+backward: "
          f"{TG} {out['tinygrad_rnn_peak_bytes'] * mb:.1f} MiB = "
          f"{out['tinygrad_rnn_peak_bytes'] / needed:.2f}x the {needed * mb:.1f} MiB of hidden states "
          f"(B*T*H*4 bytes); numpy by hand {out['numpy_bptt_peak_bytes'] * mb:.1f} MiB = "
          f"{out['numpy_bptt_peak_bytes'] / needed:.2f}x")
    return out


def print_targets(results: dict) -> list:
    """The speed issue's targets against this run: (target, measured, met) rows, printed.

    Judged on the token-id row, the way the char-LM feeds its cell (one_hot(ids) @ W_ih^T as a
    gather), against the fastest row of each kind computing the same math: every PyTorch row
    (one-hot nn.RNNCell loop, fused nn.RNN, embedding + loop), both hand-written numpy steps,
    and the GEMMs of the token-id one (the smaller floor). The one-hot row's ratios are in the
    tables above."""
    rows = []
    for h, res in results["hidden"].items():
        r = res["rows"]
        ours = r[f"{TG}, token ids (numba backend)"]["tokens_per_s"]
        best = lambda names: max(r[n.strip()]["tokens_per_s"] for n in names)  # noqa: E731
        torch_rows = [k for k in r if k.startswith("torch")]
        if torch_rows:
            ratio = ours / best(torch_rows)
            rows.append((f"H={h}: >= 1.0x the fastest PyTorch row", f"{ratio:.2f}x", ratio >= 1.0))
        ratio = ours / best([NumpyBPTT.name, NumpyBPTTGather.name])
        rows.append((f"H={h}: >= 0.8x the faster hand-written numpy BPTT", f"{ratio:.2f}x", ratio >= 0.8))
        if int(h) >= 256:
            ratio = ours / best([GemmsOnly.name, GemmsOnlyGather.name])
            rows.append((f"H={h}: >= 0.7x the smaller GEMM floor", f"{ratio:.2f}x", ratio >= 0.7))
    warm = results["startup"].get("warm")
    if warm:
        rows.append(("warm-cache import + first step < 2 s", f"{warm['total_s']:.2f} s", warm["total_s"] < 2))
    mem = results["memory"]
    graph = mem["tinygrad_rnn_graph_bytes"] / mem["hidden_states_bytes"]
    rows.append((f"graph memory after forward <= 2x B*T*H (T={mem['seq']})", f"{graph:.2f}x", graph <= 2))
    print("\ntargets of the speed issue, this run:")
    print_table(["target", "measured", ""], [[t, m, "met" if ok else "MISSED"] for t, m, ok in rows])
    return [dict(target=t, measured=m, met=ok) for t, m, ok in rows]


# ----------------------------------------------------------------------------- main


def detect_threads() -> int:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def start_run(args, what: str, script: str) -> tuple:
    """What every benchmark here does first: re-run `script` with --threads' environment if
    BLAS was sized otherwise, the settings --quick implies, whether PyTorch's rows can run, and
    a header naming the versions and how busy the machine was. Returns (threads, hidden sizes,
    warm-up steps, pause, block, torch_ok, torch_note, busy fraction)."""
    if args.threads and any(os.environ.get(v) != str(args.threads) for v in THREAD_VARS):
        # BLAS sizes its pool when numpy loads, which already happened: start over with the env set
        os.environ.update({v: str(args.threads) for v in THREAD_VARS})
        os.execv(sys.executable, [sys.executable, os.path.abspath(script)] + sys.argv[1:])
    threads = args.threads or detect_threads()
    hidden = args.hidden or ([64] if args.quick else [64, 256, 1024])
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    pause = args.pause if args.pause is not None else (0.0 if args.quick else 0.25)
    block = args.block or (1 if args.quick else 5)

    torch_ok, torch_note = False, ""
    if not args.no_torch:
        try:
            import torch
            torch_ok, torch_note = True, f"torch {torch.__version__}"
        except ImportError:
            torch_note = "PyTorch not importable: torch rows skipped (pip install torch==2.13.0 adds them)"
    else:
        torch_note = "torch rows left out (--no-torch)"

    import numba
    busy = busy_fraction()
    print(f"{what} benchmark: python {platform.python_version()}, numpy {np.__version__}, "
          f"numba {numba.__version__}; {torch_note}")
    print(f"threads: {threads}; CPU busy before start (other processes): {100 * busy:.0f}% "
          "(timings are noisy when this is high)")
    return threads, hidden, warmup, pause, block, torch_ok, torch_note, busy


def finish_run(results: dict, t_start: float, json_path: str | None) -> None:
    """The machine's load after the run, the wall time, and every number to `json_path`."""
    results["config"]["load_after"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - t_start
    print(f"\nload average before/after: {results['config']['load_before'][0]:.2f} / "
          f"{results['config']['load_after'][0]:.2f}; benchmark wall time {results['wall_s']:.0f} s")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {json_path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run of a few seconds: H=64, 3 steps")
    ap.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (default 64 256 1024; 64 with --quick)")
    ap.add_argument("--steps", type=int, help="timed steps per H (default 80/50/25 by H; 3 with --quick)")
    ap.add_argument("--warmup", type=int, help="untimed repetitions first (default 3; 1 with --quick)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds per H after which timing stops once 20 steps are in (default 60)")
    ap.add_argument("--threads", type=int, help="threads for BLAS and torch (default: the CPUs we may use)")
    ap.add_argument("--pause", type=float,
                    help="seconds of sleep before each row's turn, so the previous row's spinning "
                         "BLAS/OpenMP threads go idle (default 0.25; 0 with --quick)")
    ap.add_argument("--block", type=int,
                    help="consecutive timed steps per row's turn (default 5; 1 with --quick)")
    ap.add_argument("--no-torch", action="store_true", help="leave out the PyTorch rows")
    ap.add_argument("--json", metavar="PATH", help="also write every number to PATH")
    args = ap.parse_args(argv)
    threads, hidden, warmup, pause, block, torch_ok, torch_note, busy = start_run(args, "charlm step", __file__)
    import numba

    worst = verify_gradients()
    print("gradient check, float64, against the one-hot numpy step by hand (max relative error): "
          + "; ".join(f"{name} {err:.1e}" for name, err in worst.items()))

    t_start = time.perf_counter()
    results = {"config": dict(vocab=VOCAB, batch=BATCH, seq=SEQ, lr=LR, threads=threads, quick=args.quick,
                              python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
                              torch=torch_note, busy_before=busy, load_before=os.getloadavg()),
               "gradient_check_max_rel_err": worst, "hidden": {}}
    for h in hidden:
        steps = args.steps or (3 if args.quick else default_steps(h))
        results["hidden"][str(h)] = bench_hidden(h, steps, warmup, threads, torch_ok, args.budget, pause, block)
    results["startup"] = bench_startup(args.quick)
    results["memory"] = bench_memory(100 if args.quick else 1000, 256)
    results["targets"] = print_targets(results)
    finish_run(results, t_start, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
