"""Cut a token stream into (input, target) batches, the two ways of d2l's language-model chapter.

- sequential: the stream is split into B parallel rows; batch i holds columns [i*T, (i+1)*T)
  of each row, so the hidden state after batch i is the right start for batch i+1 (carry it,
  detached: truncated BPTT).
- random: windows of length T start at random positions and are shuffled, so consecutive
  batches are unrelated and the state is reset for each batch.

Targets are the inputs shifted by one token. Each epoch starts at a random offset in [0, T) so
windows do not always cut the text at the same places. Batches are a pure function of
(seed, epoch, index): resuming at a position needs no iterator state.
"""
from __future__ import annotations

import numpy as np


def split(ids: np.ndarray, val_frac: float = 0.1, test_frac: float = 0.0):
    """Contiguous train / validation / test parts, in that order (the held-out text is the end)."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"fractions must be in [0, 1) and sum below 1, got val {val_frac}, test {test_frac}")
    n = len(ids)
    n_test = int(n * test_frac)
    n_val = int(n * val_frac)
    n_train = n - n_val - n_test
    return ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]


class BatchStream:
    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, scheme: str = "sequential",
                 seed: int = 0):
        if scheme not in ("sequential", "random"):
            raise ValueError(f"scheme must be 'sequential' or 'random', got {scheme!r}")
        self.ids = np.asarray(ids, dtype=np.int64)
        self.batch_size, self.seq_len, self.scheme, self.seed = batch_size, seq_len, scheme, seed
        if self.batches_per_epoch < 1:
            raise ValueError(f"text of {len(self.ids)} tokens is too short for batch_size {batch_size} "
                             f"x seq_len {seq_len}")

    @property
    def batches_per_epoch(self) -> int:
        usable = len(self.ids) - 1 - (self.seq_len - 1)  # the worst-case offset
        if self.scheme == "sequential":
            return (usable // self.batch_size) // self.seq_len
        return (usable // self.seq_len) // self.batch_size

    def _epoch_plan(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        offset = int(rng.integers(self.seq_len))
        if self.scheme == "sequential":
            return offset, None
        n_windows = (len(self.ids) - 1 - offset) // self.seq_len
        return offset, rng.permutation(n_windows)

    def batch(self, epoch: int, index: int):
        """(X, Y), each (batch_size, seq_len) int64, with Y[b, t] = the token after X[b, t]."""
        if not 0 <= index < self.batches_per_epoch:
            raise IndexError(f"batch {index} out of range ({self.batches_per_epoch} per epoch)")
        offset, order = self._epoch_plan(epoch)
        B, T = self.batch_size, self.seq_len
        if self.scheme == "sequential":
            row_len = (len(self.ids) - 1 - offset) // B
            rows = offset + np.arange(B)[:, None] * row_len
            cols = index * T + np.arange(T)[None, :]
            pos = rows + cols
        else:
            starts = offset + order[index * B:(index + 1) * B] * T
            pos = starts[:, None] + np.arange(T)[None, :]
        return self.ids[pos], self.ids[pos + 1]

    def __iter__(self):
        """Endless: epoch 0, 1, 2, ...; yields (epoch, index, X, Y)."""
        epoch = 0
        while True:
            for i in range(self.batches_per_epoch):
                yield (epoch, i, *self.batch(epoch, i))
            epoch += 1
