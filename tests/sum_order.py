"""Equality up to the order of a sum, for the products a BLAS may compute in either orientation.

`h @ W.T` and `(W @ h.T).T`, or `g.T @ x` and `(x.T @ g).T`, multiply the same pairs of numbers
and add the same terms, but the BLAS kernel picks the order of the additions by the problem's
shape and the CPU it runs on: on some machines the two orientations agree bit for bit, on others
(OpenBLAS 0.3.30-0.3.31's Haswell kernels on an AMD Zen 3) they differ in the last bits. The
classical bound on a dot product of k terms is k*u*(|a| @ |b|), u the unit roundoff; the
differences seen stay far inside it. Largest seen over 5 seeds of products of the shapes the
tests use (1-2048 rows, 64-1024 columns): 7.2 u (|a| @ |b|) in float32, 4.7 u in float64
(measure: python tests/sum_order.py). `ULPS` allows 4.4x the float32 figure: an error of two
parts in 10^6 of |a| @ |b| still fails.
"""
import numpy as np

ULPS = 32


def assert_equal_up_to_sum_order(got, want, scale, what=""):
    """|got - want| <= ULPS * u * scale elementwise; `scale` is |a| @ |b| summed over the
    products that made `want` (plus |bias| where one was added)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}"
    u = np.finfo(want.dtype).eps / 2
    err = np.abs(got.astype(np.float64) - want) / (u * np.maximum(scale, np.finfo(want.dtype).tiny))
    assert err.max(initial=0) <= ULPS, (f"{what}: differs by {err.max():.1f} u (|a| @ |b|) at "
                                        f"{np.unravel_index(err.argmax(), err.shape)}; the order of a sum allows {ULPS}")


def _measure(seeds=5):  # pragma: no cover - run by hand
    from tinygrad_rnn.kernels import kernel_pairs
    pairs = kernel_pairs()
    worst = {}
    for dtype in (np.float32, np.float64):
        u = np.finfo(dtype).eps / 2
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
            for rows in (1, 7, 8, 17, 32, 33, 64, 65, 2048):
                for k, n in ((256, 256), (300, 257), (1024, 256), (256, 65), (65, 1024), (64, 64)):
                    h, w, g = r(rows, k), r(n, k), r(rows, n)
                    for got, want, scale in ((pairs["matmul"][0](h, w.T), np.matmul(h, w.T), np.abs(h) @ np.abs(w).T),
                                             (g.T @ h, (h.T @ g).T, np.abs(g).T @ np.abs(h))):
                        err = np.abs(got.astype(np.float64) - want) / (u * scale)
                        worst[np.dtype(dtype).name] = max(worst.get(np.dtype(dtype).name, 0), err.max())
    print("largest |difference| / (u (|a| @ |b|)):", {k: round(float(v), 2) for k, v in worst.items()})


if __name__ == "__main__":
    _measure()
