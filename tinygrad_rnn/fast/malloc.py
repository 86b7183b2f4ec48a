"""Keep freed array memory for reuse instead of handing it back to the operating system.

A training step frees and allocates the same arrays every step. glibc's malloc serves a block
above its mmap threshold (128 KiB, raised dynamically up to a point) with fresh pages and gives
pages back to the kernel on free (unmapping, or trimming the heap top), so the next step pays a
page fault, and the kernel zeroing the page, for each 4 KiB it touches again.
`retain_freed_memory()` raises the mmap threshold to 32 MiB (glibc's maximum) and the trim
threshold to 512 MiB, so freed blocks stay on malloc's free lists and the next step reuses
them. Measured on the charlm step (benchmarks/charlm_step.py's shapes, 50 steps back to back,
default -> retained): minor page faults per step 359 -> 1 at H=64, 2143 -> 1 at H=256,
2578 -> 1 at H=1024; time per step 5.66 -> 5.39 ms, 14.79 -> 12.44 ms, 99.98 -> 91.25 ms.

The price is process-wide: the heap keeps up to 512 MiB of freed memory instead of returning
it, so the resident size stays near its high-water mark. A library must not make that choice
for its host, so it is opt-in: the `tinygrad-rnn` trainer and the benchmarks call it, a user's
program calls `tinygrad_rnn.fast.retain_freed_memory()` or sets `TINYGRAD_RNN_MALLOC=retain`
before the import. (PyTorch's CPU performance guide gets the same effect by preloading jemalloc
or tcmalloc.) Elsewhere than glibc (macOS, musl) nothing is changed.
"""
from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 512 * 2**20
_retaining = [False]


def retain_freed_memory() -> bool:
    """Apply the thresholds above for the whole process; True when glibc accepted both."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # the process's own symbols include libc's; ctypes.util.find_library would run ldconfig
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    _retaining[0] = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _retaining[0]


def retaining_freed_memory() -> bool:
    """True once retain_freed_memory() has been applied in this process."""
    return _retaining[0]
