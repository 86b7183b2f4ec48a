"""Tolerances the tests share, and how they were set.

`GRADCHECK` is what every float64 gradient check in the tests passes to `tg.gradcheck`: a
thousand times tighter than PyTorch's `gradcheck` defaults on the absolute side and a thousand
on the relative side, which `tg.gradcheck` keeps for users (a user's function may lose digits
without being wrong; our ops must not). At PyTorch's defaults a backward wrong by 0.05% passes
the per-op property test; at these it fails (tanh and log, both backends). The largest error
seen against these tolerances: 1/11 of the bound in test_ops.py; in test_fuzz.py at eps 1e-6,
one program in 160 failed on a correct gradient (which is why the fuzzer uses eps 1e-5,
below); at eps 1e-5, over 200 programs, 1/7 of the bound.

Every other tolerance in the tests sits next to a comment giving the largest error seen and
how to measure it again: `python tests/measure_tolerances.py [test files]` runs the tests
several times with fresh random data and prints, for each comparison, its largest error as a
fraction of what the tolerance allows. Tolerances are at most 100 times the largest error
seen. Where a comparison came out exact in every run, `EXACT` allows a few units in the last
place instead of none: OpenBLAS and numpy pick their kernels by CPU at run time, so another
machine may round differently.
"""
import numpy as np

GRADCHECK = dict(atol=1e-8, rtol=1e-6)  # PyTorch's defaults: atol=1e-5, rtol=1e-3

# A fuzzed program (tests/test_fuzz.py) sums up to 200 ops into a loss often in the tens, and
# a central difference at gradcheck's eps=1e-6 carries a rounding error of about
# 2.2e-16 * |loss| / 1e-6, which can reach atol alone: a correct gradient of -5.05e-8 read as
# -3.91e-8 (a loss of 58; eps 1e-3 to 1e-4 all give -5.05e-8). At eps=1e-5 that error is ten
# times smaller, while the truncation error (eps^2 times the third derivative) stays far
# below atol for these smooth ops.
FUZZ_GRADCHECK = dict(eps=1e-5, **GRADCHECK)

EXACT = {np.dtype(np.float64): 4 * np.finfo(np.float64).eps, np.dtype(np.float32): 4 * np.finfo(np.float32).eps}
EXACT64 = EXACT[np.dtype(np.float64)]
