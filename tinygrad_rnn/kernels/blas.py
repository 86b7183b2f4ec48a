"""numpy's own BLAS matrix product, callable from inside numba kernels.

A recurrent step at a small hidden size spends much of its time entering kernels: `np.matmul`
costs about 0.8 µs on top of BLAS for a 32x64 product, and every separate call (product, then
the gather or activation pass beside it) also pays its Python wrapper. With the product inside
the numba kernel, the Elman step's forward (product + gather + biases) and its backward
(activation derivative + product) are one call each: at B=32, H=64, 10.2 -> 8.7 and 6.3 -> 5.4
µs in one sitting, 7.3 -> 6.3 and 4.8 -> 4.2 in another (docs/kernels.md).

The product called is the very function `np.matmul` calls, `cblas_?gemm` of the OpenBLAS that
numpy links, with the arguments numpy's matmul loop passes it (row-major, alpha 1, beta 0, a
transposed operand given by its trans flag), so its results are `np.matmul`'s bit for bit
(tests/test_kernels.py). That holds only where numpy itself would call gemm: both operands and
the output C-contiguous (or transposed views of C-contiguous arrays) and no dimension 1, where
numpy switches to gemv or a dot product. The kernels check that (`blasable`) and report a
misfit, and their callers then take their np.matmul path.

Found: the ILP64 interface (64-bit integers) that numpy's wheels ship since numpy 2.0
(`scipy_cblas_sgemm64_` in scipy-openblas). It is registered with LLVM under names of our own
(`tinygrad_rnn_?gemm_ilp64`), so a kernel compiled here and cached on disk links to it again
in the next process. Not found (numpy built against MKL, Accelerate or a 32-bit-integer
OpenBLAS): `HAVE_GEMM` is False, no kernel that calls it is ever compiled, and the callers use
their np.matmul path. `TINYGRAD_RNN_GEMM_IN_KERNELS=0` before the import forces that path too.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
from numba import njit, types

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enum values

# numpy >= 2's wheels prefix and suffix the symbols of their bundled OpenBLAS; a numpy built
# against a plain ILP64 OpenBLAS has the suffix only
_CANDIDATES = {"s": ("scipy_cblas_sgemm64_", "cblas_sgemm64_"), "d": ("scipy_cblas_dgemm64_", "cblas_dgemm64_")}


def _find_gemm() -> dict:
    """{'s': address, 'd': address} of numpy's ILP64 cblas_?gemm, or {} when either is missing."""
    if os.environ.get("TINYGRAD_RNN_GEMM_IN_KERNELS", "1") == "0":
        return {}
    try:
        # dlsym on numpy's extension module searches the libraries it links, its BLAS among them
        lib = ctypes.CDLL(np._core._multiarray_umath.__file__)
    except (OSError, AttributeError):
        return {}
    found = {}
    for prefix, names in _CANDIDATES.items():
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                found[prefix] = ctypes.cast(fn, ctypes.c_void_p).value
                break
    return found if len(found) == 2 else {}


def _register(found: dict) -> bool:
    if not found:
        return False
    import llvmlite.binding as llvm
    for prefix, address in found.items():
        llvm.add_symbol(f"tinygrad_rnn_{prefix}gemm_ilp64", address)
    return True


HAVE_GEMM = _register(_find_gemm())

# pointers travel as integers: the same registers under the x86-64 and AArch64 calling conventions
_i32, _i64, _ptr = types.int32, types.int64, types.uintp
_sgemm = types.ExternalFunction("tinygrad_rnn_sgemm_ilp64", types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float32, _ptr, _i64, _ptr, _i64, types.float32, _ptr, _i64))
_dgemm = types.ExternalFunction("tinygrad_rnn_dgemm_ilp64", types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float64, _ptr, _i64, _ptr, _i64, types.float64, _ptr, _i64))


@njit(cache=True)
def gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """c (m, n) = op(a) @ op(b), row-major, as np.matmul calls BLAS (only with HAVE_GEMM).
    op(x) is x, or x's transpose when its flag is TRANS: a transposed view of a C-contiguous
    array is passed as that array with the flag, as numpy does."""
    if c.itemsize == 4:
        _sgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, 0.0,
               c.ctypes.data, ldc)
    else:
        _dgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, 0.0,
               c.ctypes.data, ldc)


GEMM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # dtypes the callers may pass


@njit(cache=True)
def blasable(a) -> bool:
    """True when numpy's matmul would hand `a` to gemm as is: C-contiguous, no dimension 1
    (where numpy calls gemv or a dot product instead)."""
    return a.flags.c_contiguous and a.shape[0] > 1 and a.shape[1] > 1
