"""Everything that buys speed without changing a value, behind one switch.

The engine (autograd.py) and the ops (ops/) are the textbook algorithm. This package makes the
same computation faster through one small interface: an op's backward may send a *lazy share*
(an object with `.value()`, fast/lazy.py) instead of an array, and the walk sums shares with
`FastAccumulator` (fast/accumulate.py), a subclass of the engine's `Accumulator`, which this
package installs. `disable()` (or `with disabled():`, or TINYGRAD_RNN_FAST=0 before the import)
switches the whole stack to the textbook path: the default accumulator, ops that send plain
arrays, recurrent cells recorded op by op. Values agree to rounding (1e-12 relative in float64,
tested); use the plain path to read or step through a backward, and as a test oracle.

What is here, with its measured effect (the charlm benchmark's step, B=32, T=64; numbers from
docs/speed.md, where each was measured, and docs/fast.md, which explains each):

- all of it together: the plain path's charlm step takes 2.5x the fast one's time at H=64 and
  1.5x at H=256 (docs/fast.md).
- fused recurrent steps (steps.py): the Elman, LSTM and GRU step each one graph node instead of
  9-15; an LSTM char step 21.6 -> 11.1 ms at H=64, a GRU step 23.4 -> 10.6 ms.
- the LSTM layer over a sequence (sequence.py): the input's product for all T steps as one
  node, one node per step with the gates in a few numba passes; the layer's char step 0.41 ->
  0.66-0.73x PyTorch's fused LSTM at H=64, 0.56 -> 0.63-0.69x at H=256.
- one GEMM per weight (lazy.OuterGrad, accumulate.py): the T per-step products a recurrent
  weight receives summed as one product, 53 -> 21 ms at H=1024.
- lazy slices and token-id columns (lazy.SliceGrad, ColumnGrad): added into one buffer per
  input; reading a length-T sequence step by step is O(T) instead of O(T^2) in backward.
- blocks and gradient twins (blocks.py): a loop's states, and in backward its dL/dpre, as rows
  of one array, so the weight gradients are evaluated over views, not copies: a step's weight
  work 0.50-0.80 -> 0.17-0.24 ms at H=64; one gradient per weight and run of steps
  (lazy.RowsGrad), the whole H=64 step 0.93x.
- the cell's short path (steps.RNNCellStep.apply_to_tensors): 0.5-1.2 µs of a 13-14 µs step.
- retaining freed memory (malloc.py, opt-in): step 14.79 -> 12.44 ms at H=256.
"""
from __future__ import annotations

import os

from .. import autograd
from .accumulate import FastAccumulator
from .malloc import retain_freed_memory, retaining_freed_memory  # noqa: F401

_on = [os.environ.get("TINYGRAD_RNN_FAST", "1") not in ("0", "off", "false")]


def enabled() -> bool:
    """True when the fast path is on (the default)."""
    return _on[0]


def enable() -> None:
    """Switch the fast path on, for the whole process (all threads)."""
    _on[0] = True
    autograd.use_accumulator(FastAccumulator)


def disable() -> None:
    """Switch to the textbook path, for the whole process (all threads): graphs recorded from
    now on use generic ops only, and every backward sums with the engine's own Accumulator."""
    _on[0] = False
    autograd.use_accumulator(autograd.Accumulator)


class disabled:
    """`with tinygrad_rnn.fast.disabled():` the textbook path inside, the previous setting after."""

    def __enter__(self):
        self.prev = _on[0]
        disable()
        return self

    def __exit__(self, *exc):
        (enable if self.prev else disable)()
        return False


if _on[0]:
    enable()
if os.environ.get("TINYGRAD_RNN_MALLOC", "") == "retain":
    retain_freed_memory()
