"""Recurrent layers: one-step cells, and RNN/LSTM/GRU that loop those same steps over a sequence.

Nothing here knows about backpropagation through time. A step is one time step's math: the
Elman, LSTM and GRU steps as one fused graph node each (fast/steps.py; with
`tinygrad_rnn.fast.disabled()` they are recorded op by op, as `_rnn_step_unfused`, `_lstm_step`
and `_gru_step` spell them); a Python `for t in range(T)` records T copies of it in the graph,
and `loss.backward()` on that graph *is* BPTT. The LSTM layer on the fast path splits its step
as PyTorch's fused layer does (fast/sequence.py): the input's product for all T steps as one
node, then the loop over time of what depends on h, one node per step.

Truncated BPTT: keep the state between chunks of a long sequence but cut the graph, so each
backward covers one chunk and the previous chunk's graph can be freed:

    h = None
    for chunk, target in chunks:
        out, h = rnn(chunk, h)
        loss = criterion(head(out), target)
        loss.backward(); opt.step(); opt.zero_grad()
        h = h.detach()                                  # LSTM: h = (h[0].detach(), h[1].detach())

Parameter names, shapes, gate order and initialisation are PyTorch's, so a PyTorch state_dict
converted to numpy loads and gives the same numbers.
"""
from __future__ import annotations

import math

import numpy as np

from ..functional import cat, stack
from .. import fast
from .._args import is_token_ids
from ..fast.sequence import lstm_sequence
from ..fast.steps import GRUCellStep, LSTMCellStep, RNNCellStep
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter

_ACTIVATIONS = {"tanh": Tensor.tanh, "relu": Tensor.relu, "sigmoid": Tensor.sigmoid}

def _rnn_step(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    if fast.enabled():
        # nonlinearity passed by position: a keyword costs apply a dict, 0.2 µs a time step
        return RNNCellStep.apply(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    return _rnn_step_unfused(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)


def _project(x, w_t):
    """x @ w_t; token ids stand for one-hot rows, whose product picks rows of w_t."""
    return F.embedding(x, w_t) if is_token_ids(x) else x @ w_t


def _rnn_step_unfused(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    pre = _project(x, w_ih.T) + h @ w_hh.T
    return _ACTIVATIONS[nonlinearity](pre if b_ih is None else pre + (b_ih + b_hh))


def _lstm(w_ih, w_hh, b_ih, b_hh):
    """(step, its weights) for an LSTM step: the fused node on PyTorch's layout, or the op-by-op
    step on transposed weights (in, 4H) and b_ih + b_hh, which a sequence layer prepares once
    per forward, not once per step."""
    if fast.enabled():
        return _lstm_step_fused, (w_ih, w_hh, b_ih, b_hh)
    return _lstm_step, (w_ih.T, w_hh.T, _sum(b_ih, b_hh))


def _gru(w_ih, w_hh, b_ih, b_hh):
    """(step, its weights) for a GRU step, as `_lstm` does (the biases stay apart)."""
    if fast.enabled():
        return GRUCellStep.apply, (w_ih, w_hh, b_ih, b_hh)
    return _gru_step, (w_ih.T, w_hh.T, b_ih, b_hh)


def _lstm_step_fused(x, h, c, w_ih, w_hh, b_ih, b_hh):
    hc = LSTMCellStep.apply(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return hc[0], hc[1]


def _lstm_step(x, h, c, w_ih_t, w_hh_t, b):
    gates = _project(x, w_ih_t) + h @ w_hh_t
    if b is not None:
        gates = gates + b
    i, f, g, o = gates.chunk(4, 1)  # PyTorch's gate order: input, forget, cell, output
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def _gru_step(x, h, w_ih_t, w_hh_t, b_ih, b_hh):
    # b_ih and b_hh stay apart: the reset gate multiplies (W_hn h + b_hn), bias included
    gi, gh = _project(x, w_ih_t), h @ w_hh_t
    if b_ih is not None:
        gi, gh = gi + b_ih, gh + b_hh
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = (i_r + h_r).sigmoid()
    z = (i_z + h_z).sigmoid()
    n = (i_n + r * h_n).tanh()
    return (h - n) * z + n  # = (1 - z) * n + z * h, in PyTorch's order of operations


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _sum(b_ih, b_hh):
    return None if b_ih is None else b_ih + b_hh


def _check_activation(nonlinearity):
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'; choose one of {sorted(_ACTIVATIONS)}")


def _init_uniform(module) -> None:
    """PyTorch's recurrent init: every weight and bias from U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


# ----------------------------------------------------------------------------- cells
class _CellBase(Module):
    _gates = 1
    _n_states = 1  # tensors in the state: 1 (h), or 2 for the LSTM's (h, c)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gh = self._gates * hidden_size
        self.weight_ih = Parameter(np.empty((gh, input_size), np.float32))
        self.weight_hh = Parameter(np.empty((gh, hidden_size), np.float32))
        self.bias_ih = Parameter(np.empty(gh, np.float32)) if bias else None
        self.bias_hh = Parameter(np.empty(gh, np.float32)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_uniform(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _batch(self, input, hx):
        """(input as (B, I) or token ids (B,), state as a tuple of (B, H), whether the input
        had no batch dim). A numpy input stays a numpy array: the step takes it as a constant,
        as it would the Tensor made of it, without making one each time step."""
        x = input if isinstance(input, (Tensor, np.ndarray)) else Tensor(input)
        shape, ids = x.shape, is_token_ids(x)
        if ids:  # token ids (B,) or (): one-hot rows, read as a gather
            if len(shape) > 1:
                raise ValueError(f"{type(self).__name__}: integer input is read as token ids of shape "
                                 f"(batch,) or (); got {shape} {x.dtype} (cast one-hot rows to float)")
            unbatched = len(shape) == 0
        elif len(shape) not in (1, 2) or shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: expected input of shape (batch, {self.input_size}) "
                             f"or ({self.input_size},), or token ids (batch,); got {shape}")
        else:
            unbatched = len(shape) == 1
        if unbatched:
            x = x.unsqueeze(0) if isinstance(x, Tensor) else x[None]
        if hx is None:
            zero = Tensor(np.zeros((x.shape[0], self.hidden_size), self.weight_hh.dtype if ids else x.dtype))
            return x, (zero,) * self._n_states, unbatched
        states = (_as_tensor(hx),) if self._n_states == 1 else tuple(_as_tensor(s) for s in hx)
        want = (self.hidden_size,) if unbatched else (shape[0], self.hidden_size)
        for s in states:
            if s._data.shape != want:
                raise ValueError(f"{type(self).__name__}: expected hidden state of shape {want}, "
                                 f"got {s.shape}")
        if unbatched:
            states = tuple(s.unsqueeze(0) for s in states)
        return x, states, unbatched


class RNNCell(_CellBase):
    """h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh) with act tanh, relu or sigmoid.

    'sigmoid' (not in PyTorch) is the lecture notes' simple RNN h = sigmoid(A h + B x + c).
    `weight_ih` (H, I), `weight_hh` (H, H); everything starts U(-1/sqrt(H), 1/sqrt(H)).
    One step only: loop it over time yourself (see the module docstring for truncated BPTT).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"):
        _check_activation(nonlinearity)
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        if type(input) is np.ndarray and type(hx) is Tensor and input.ndim == 1 and is_token_ids(input) \
                and hx._data.shape == (input.shape[0], self.hidden_size):
            # a char-RNN loop's every step: a batch of token ids and the previous state, nothing
            # for _batch to convert or refuse (1.0 µs a step of 15 at H=64)
            if fast.enabled() and self.bias_ih is not None and self.bias_hh is not None:
                return RNNCellStep.apply_to_tensors(input, hx, self.weight_ih, self.weight_hh, self.bias_ih,
                                                    self.bias_hh, self.nonlinearity)
            return _rnn_step(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)
        x, (h,), unbatched = self._batch(input, hx)
        h = _rnn_step(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)
        return h.squeeze(0) if unbatched else h


class LSTMCell(_CellBase):
    """One LSTM step; `hx` is (h, c) and so is the result.

    Gates i, f, g, o are stacked in that order in `weight_ih` (4H, I) and `weight_hh` (4H, H):
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c').
    """

    _gates, _n_states = 4, 2

    def forward(self, input, hx=None):
        x, (h, c), unbatched = self._batch(input, hx)
        step, weights = _lstm(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        h, c = step(x, h, c, *weights)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)


class GRUCell(_CellBase):
    """One GRU step with gates r, z, n stacked in `weight_ih` (3H, I), `weight_hh` (3H, H):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.
    """

    _gates = 3

    def forward(self, input, hx=None):
        x, (h,), unbatched = self._batch(input, hx)
        step, weights = _gru(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        h = step(x, h, *weights)
        return h.squeeze(0) if unbatched else h


# ----------------------------------------------------------------------------- sequences
class _RNNBase(Module):
    """Runs the one-step math over time, layer by layer and direction by direction.

    Parameters are attributes of this module named as in PyTorch (weight_ih_l0,
    weight_hh_l1_reverse, bias_ih_l0, ...), so state_dict keys match PyTorch's.
    """

    _gates = 1
    _n_states = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        gh = self._gates * hidden_size
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self._directions
            for sfx in self._suffixes:
                setattr(self, f"weight_ih_l{layer}{sfx}", Parameter(np.empty((gh, in_size), np.float32)))
                setattr(self, f"weight_hh_l{layer}{sfx}", Parameter(np.empty((gh, hidden_size), np.float32)))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{sfx}", Parameter(np.empty(gh, np.float32)))
                    setattr(self, f"bias_hh_l{layer}{sfx}", Parameter(np.empty(gh, np.float32)))
        self.reset_parameters()

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        _init_uniform(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = dict(num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                        dropout=0.0, bidirectional=False)
        for k, default in defaults.items():
            if getattr(self, k, default) != default:
                s += f", {k}={getattr(self, k)}"
        return s

    def _layer_params(self, layer: int, sfx: str):
        w_ih, w_hh = getattr(self, f"weight_ih_l{layer}{sfx}"), getattr(self, f"weight_hh_l{layer}{sfx}")
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, f"bias_ih_l{layer}{sfx}"), getattr(self, f"bias_hh_l{layer}{sfx}")

    def _initial_state(self, hx, batch: int, dtype, unbatched: bool):
        """A tuple of (num_layers * directions, B, H) tensors, zeros when hx is None."""
        shape = (self.num_layers * self._directions, batch, self.hidden_size)
        if hx is None:
            return (Tensor(np.zeros(shape, dtype)),) * self._n_states
        states = tuple(_as_tensor(s) for s in (hx if self._n_states > 1 else (hx,)))
        want = (shape[0], shape[2]) if unbatched else shape
        for s in states:
            if s.shape != want:
                raise ValueError(f"{type(self).__name__}: expected hidden size {want}, got {s.shape}")
        return tuple(s.unsqueeze(1) for s in states) if unbatched else states

    def forward(self, input, hx=None):
        """input (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched; or token ids
        (T, B), (B, T) or (T,), standing for one-hot rows of I features (read as a gather).

        Returns (output, h_n): output (T, B, D*H) (batch-first if asked), the last layer's
        h at every step, both directions concatenated; h_n (num_layers*D, B, H), each layer's
        final state (never batch-first, as in PyTorch). The LSTM's hx and h_n are (h, c) pairs.
        """
        x = _as_tensor(input)
        ids = is_token_ids(x)
        if x.ndim not in (1, 2) if ids else (x.ndim not in (2, 3) or x.shape[-1] != self.input_size):
            raise ValueError(f"{type(self).__name__}: expected input of {self.input_size} features "
                             f"with 3 dims (batched) or 2 (unbatched), or token ids with 2 or 1; "
                             f"got {x.shape} {x.dtype}")
        unbatched = x.ndim == (1 if ids else 2)
        if unbatched:
            x = x.unsqueeze(1)
        time_dim = 1 if self.batch_first and not unbatched else 0
        steps, batch = x.shape[time_dim], x.shape[1 - time_dim]
        if steps == 0:  # PyTorch: "Expected sequence length to be larger than 0 in RNN"
            raise ValueError(f"{type(self).__name__}: expected a sequence of length > 0, got input of "
                             f"shape {tuple(input.shape)}")
        states = self._initial_state(hx, batch, self.weight_hh_l0.dtype if ids else x.dtype, unbatched)
        if fast.enabled() and self._sequence is not None:
            output, finals = self._sequence_layers(x, states, time_dim)
        else:
            output, finals = self._step_layers(x, states, time_dim, steps)
        h_n = tuple(stack([f[i] for f in finals], 0) for i in range(self._n_states))
        if unbatched:
            output = output.squeeze(1)
            h_n = tuple(h.squeeze(1) for h in h_n)
        return output, (h_n if self._n_states > 1 else h_n[0])

    _sequence = None  # a whole direction of a layer as one function, for the fast path (LSTM)

    def _step_layers(self, x, states, time_dim: int, steps: int):
        """(output, each layer and direction's final state): the layers as loops over time of one step."""
        xs = [x[t] if time_dim == 0 else x[:, t] for t in range(steps)]
        finals = []
        for layer in range(self.num_layers):
            per_direction = []
            for d, sfx in enumerate(self._suffixes):
                prepared = self._prepare(*self._layer_params(layer, sfx))
                state = tuple(s[layer * self._directions + d] for s in states)
                ys = [None] * steps
                for t in (reversed(range(steps)) if d else range(steps)):
                    state = self._step(xs[t], state, prepared)
                    ys[t] = state[0]
                finals.append(state)
                per_direction.append(ys)
            xs = per_direction[0] if len(per_direction) == 1 else [cat(p, 1) for p in zip(*per_direction)]
            if self.dropout and self.training and layer < self.num_layers - 1:
                xs = [F.dropout(y, self.dropout) for y in xs]
        return stack(xs, time_dim), finals

    def _sequence_layers(self, x, states, time_dim: int):
        """`_step_layers` with each direction of a layer run by `_sequence` over the whole
        sequence (T, B, ...) at once; dropout draws one mask for all steps, the numbers the
        steps' masks would take in turn."""
        seq = x if time_dim == 0 else x.transpose(0, 1)
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d, sfx in enumerate(self._suffixes):
                i = layer * self._directions + d
                out, final = self._sequence(seq, *(s[i] for s in states), *self._layer_params(layer, sfx),
                                            reverse=bool(d))
                outs.append(out)
                finals.append(final)
            seq = outs[0] if len(outs) == 1 else cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                seq = F.dropout(seq, self.dropout)
        return (seq if time_dim == 0 else seq.transpose(0, 1)), finals

    # `_prepare` turns a layer's parameters into what `_step` takes, once per forward; the
    # Elman step takes PyTorch's layout as it is
    def _prepare(self, w_ih, w_hh, b_ih, b_hh):
        return w_ih, w_hh, b_ih, b_hh


class RNN(_RNNBase):
    """Elman RNN over a sequence: per layer, h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    `nonlinearity` is 'tanh', 'relu' or 'sigmoid' (the last not in PyTorch). See
    `_RNNBase.forward` for shapes and the module docstring for truncated BPTT
    (`h = h.detach()` between chunks).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False):
        _check_activation(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)

    def _step(self, x, state, prepared):
        return (_rnn_step(x, state[0], *prepared, self.nonlinearity),)


class LSTM(_RNNBase):
    """LSTM over a sequence; hx and h_n are (h, c) pairs of (num_layers*D, B, H) tensors.

    Truncated BPTT detaches both: `h = (h[0].detach(), h[1].detach())`.
    """

    _gates, _n_states = 4, 2
    _sequence = staticmethod(lstm_sequence)

    def _prepare(self, w_ih, w_hh, b_ih, b_hh):
        return _lstm(w_ih, w_hh, b_ih, b_hh)

    def _step(self, x, state, prepared):
        step, weights = prepared
        return step(x, *state, *weights)


class GRU(_RNNBase):
    """GRU over a sequence, PyTorch's formula (see GRUCell). Truncated BPTT: `h = h.detach()`."""

    _gates = 3

    def _prepare(self, w_ih, w_hh, b_ih, b_hh):
        return _gru(w_ih, w_hh, b_ih, b_hh)

    def _step(self, x, state, prepared):
        step, weights = prepared
        return (step(x, state[0], *weights),)
