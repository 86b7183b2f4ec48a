"""Consecutive time steps' states as consecutive rows of one array.

A Python loop over time makes T hidden states of shape (B, H). Allocated one by one they land
anywhere in memory, and the single GEMM for a recurrent weight's gradient (`lazy.OuterGrad`,
`lazy.RowsGrad`), which needs the T states' rows side by side, would pay a copy of all of them.
So a recurrent step (fast/steps.py) asks `next_row` where to write its output: the row after
its input state's, when that state is the row handed out last in its block and the block has
room; else row 0 of a new block. The states of one loop then sit in one array, and `run` gives
a view of them in place of the copy. (Until 2026-12 `stack` returned that view too; it copies
now, like PyTorch's: a result must not share memory with its inputs.)

Each row is handed out once, to one step, and nothing but that step writes it; blocks are held
only through the rows' views (weak references here), so a block lives exactly as long as some
state in it does. One block per thread is open at a time.

Backward has the mirror image. Every weight gradient of a step is a sum over its rows of dL/dpre
(W_hh's dpre^T h, W_ih's scatter by token id, the biases' column sums), so a step's backward
keeps dpre in row t of its block's gradient twin (`grad_row`) and hands the engine those sums
unevaluated; the engine then evaluates each over all steps' rows at once, as a view of the twin,
as a hand-written BPTT does. A twin belongs to one backward walk (`walk`): two walks over one
retained graph, or in two threads, never write into each other's rows. The sums a run of steps
hands the engine are one per weight (`runs`, `lazy.RowsGrad`), which each step before the
run's last one extends by its row.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

# Rows per block: a char-RNN's BPTT length (the charlm benchmark's and the CLI's is 64); a
# longer loop spans several blocks, whose rows are joined per block. Bounded in bytes for wide batches.
BLOCK_ROWS = 64
BLOCK_BYTES = 16 * 2**20


class Block:
    """An (N, *row shape) array and the rows handed out of it so far, both by weak reference."""

    __slots__ = ("rows", "shape", "dtype", "handed", "twin")

    def __init__(self, rows: np.ndarray):
        self.rows = weakref.ref(rows)
        self.shape, self.dtype = rows.shape, rows.dtype
        self.handed = []  # a weak reference to each row handed out, in order
        self.twin = (None, None)  # (the walk, a weak reference to its gradient twin), set as one

    def holds(self, t: int, a: np.ndarray) -> bool:
        """True when `a` is row t as it was handed out (not some other array of equal values)."""
        return 0 <= t < len(self.handed) and self.handed[t]() is a


class _Open(threading.local):
    block = None
    walk = None  # the innermost backward walk running in this thread


_open = _Open()


def next_row(prev: np.ndarray) -> tuple:
    """(out, block, t): an uninitialised array shaped and typed like `prev` for the step that
    reads `prev`; it is row t of `block`."""
    block = _open.block
    if block is not None and block.handed[-1]() is prev:
        rows = block.rows()  # alive: prev is one of its rows
        t = len(block.handed)
        if t < rows.shape[0]:
            out = rows[t]
            block.handed.append(weakref.ref(out))
            return out, block, t
    n = max(1, min(BLOCK_ROWS, BLOCK_BYTES // max(prev.nbytes, 1)))
    rows = np.empty((n,) + prev.shape, prev.dtype)
    block = _open.block = Block(rows)
    out = rows[0]
    block.handed.append(weakref.ref(out))
    return out, block, 0


def run(arrays, block: Block, t0: int):
    """`arrays` as one array, a view, when they are rows t0, t0 + 1, ... of `block`; else None."""
    rows = block.rows()
    if rows is None:
        return None
    for k, a in enumerate(arrays):
        if not block.holds(t0 + k, a):
            return None
    return rows[t0:t0 + len(arrays)]


class walk:
    """The scope of one backward walk (the FastAccumulator of one autograd.backward): gradient rows are its own."""

    def __enter__(self):
        self.outer = _open.walk
        self.runs = {}  # see runs()
        _open.walk = self
        return self

    def __exit__(self, *exc):
        _open.walk = self.outer
        return False


def grad_row(block: Block, t: int, like: np.ndarray) -> tuple:
    """(row, at) for a step's dL/dpre shaped and typed like `like` (B, H): row t of this walk's
    gradient twin of `block`, at = (twin, t), when `like` fits the block's rows; else a fresh
    array and at = None. A twin is held only by the rows the engine keeps (weakly here), so it
    goes once they are evaluated; a row asked for after that lands in a new twin, and so does one
    asked for after another walk (a nested one, another thread's) took the block: the engine then
    joins the rows of each twin apart."""
    w = _open.walk
    if w is None or block.shape[1:] != like.shape or block.dtype != like.dtype:
        return np.empty(like.shape, like.dtype), None
    walk_of, ref = block.twin  # one read: another thread may set block.twin meanwhile
    twin = ref() if walk_of is w else None
    if twin is None:
        twin = np.empty(block.shape, block.dtype)
        block.twin = (w, weakref.ref(twin))
    return twin[t], (twin, t)


RUNS_KEPT = 4  # blocks whose runs a walk keeps at once: a few loops interleaved in one graph


def runs(block: Block, twin: np.ndarray) -> list:
    """[twin, then the open `lazy.RowsGrad` of each kind or None]: where a recurrent step's
    backward finds the runs the step after it started over `block`'s gradient twin (fast/steps.py).
    Kept by the walk, not the block: they hold the twin, which must not outlive the walk. A
    block's entry goes when its step 0 is done (`end_runs`), or when more than RUNS_KEPT
    blocks have one (their runs then just stop growing)."""
    kept = _open.walk.runs
    entry = kept.get(id(block))
    if entry is None or entry[0] is not twin:
        if len(kept) >= RUNS_KEPT:
            del kept[next(iter(kept))]
        entry = kept[id(block)] = [twin, None, None, None]
    return entry


def end_runs(block: Block) -> None:
    _open.walk.runs.pop(id(block), None)
