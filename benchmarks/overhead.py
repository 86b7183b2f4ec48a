"""Where the time goes: framework overhead per op, matmul paths, loop-kernel GFLOP/s, compile cost.

    python benchmarks/overhead.py           # full run (a few minutes on 2 cores)
    python benchmarks/overhead.py --quick   # smoke run: fewer repeats, no 2048^3 loop kernels

Prints tables only. Timings are medians over repeats (time.perf_counter); ratios are printed,
never asserted: they depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from machine import busy_fraction

# like the trainer, the benchmarks keep freed memory in malloc (tinygrad_rnn/fast/malloc.py);
# set before tinygrad_rnn is imported, here or in the subprocesses that inherit it
os.environ.setdefault("TINYGRAD_RNN_MALLOC", "retain")

# ----------------------------------------------------------------------------- timing helpers


def per_call(fn, number: int, repeat: int) -> float:
    """Median seconds per call of `fn()`, over `repeat` runs of `number` calls each."""
    fn()  # first call outside the clock: compilation, cache loading, allocator warm-up
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number)
    return statistics.median(runs)


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[c if isinstance(c, str) else f"{c:.2f}" for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for k, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


# ----------------------------------------------------------------------------- (a) small ops


def bench_small_ops(quick: bool) -> None:
    import tinygrad_rnn as tg

    number, repeat = (500, 5) if quick else (5000, 9)
    rng = np.random.default_rng(0)
    an, bn, cn = (rng.standard_normal((32, 64)).astype(np.float32) for _ in range(3))
    t_np = per_call(lambda: an * bn + cn, number, repeat)
    rows = [["numpy a*b+c", t_np * 1e6, "-", "-"]]
    for grad in (False, True):
        a, b, c = (tg.Tensor(x, requires_grad=grad) for x in (an, bn, cn))
        t = per_call(lambda: a * b + c, number, repeat)
        label = "tinygrad_rnn a*b+c " + ("requires_grad" if grad else "no grad")
        rows.append([label, t * 1e6, f"{t / t_np:.1f}x", (t - t_np) / 2 * 1e6])
    a, b, c = (tg.Tensor(x, requires_grad=True) for x in (an, bn, cn))
    seed = np.ones((32, 64), np.float32)

    def fwd_bwd():
        (a * b + c).backward(seed)
        a.grad = b.grad = c.grad = None

    # numpy doing the same forward and the backward by hand: ga = g*b, gb = g*a, gc = g
    def fwd_bwd_np():
        an * bn + cn
        seed * bn, seed * an, seed.copy()

    t_np_fb = per_call(fwd_bwd_np, number // 2, repeat)
    t_fb = per_call(fwd_bwd, number // 2, repeat)
    rows.append(["numpy forward + hand backward", t_np_fb * 1e6, "-", "-"])
    rows.append(["tinygrad_rnn forward + backward()", t_fb * 1e6, f"{t_fb / t_np_fb:.1f}x",
                 (t_fb - t_np_fb) / 2 * 1e6])
    table("(a) small ops: a*b+c on 32x64 float32 (2 ops; overhead = (framework - numpy) / 2)",
          ["what", "µs per call", "vs numpy", "overhead µs/op"], rows)


# ----------------------------------------------------------------------------- (b) one matmul


def bench_matmul_paths(quick: bool) -> None:
    import tinygrad_rnn as tg
    from tinygrad_rnn.kernels import K

    number, repeat = (200, 5) if quick else (2000, 9)
    rng = np.random.default_rng(0)
    an = rng.standard_normal((32, 256)).astype(np.float32)
    bn = rng.standard_normal((256, 256)).astype(np.float32)
    flops = 2 * 32 * 256 * 256
    t_np = per_call(lambda: an @ bn, number, repeat)
    t_k = per_call(lambda: K.matmul(an, bn), number, repeat)
    a, b = tg.Tensor(an), tg.Tensor(bn)
    t_fw = per_call(lambda: a @ b, number, repeat)
    ag, bg = tg.Tensor(an, requires_grad=True), tg.Tensor(bn, requires_grad=True)
    t_fwg = per_call(lambda: ag @ bg, number, repeat)
    rows = []
    for label, t in (("numpy a @ b", t_np), ("raw kernel K.matmul", t_k),
                     ("tinygrad_rnn Tensor @ (no grad)", t_fw), ("tinygrad_rnn Tensor @ (requires_grad)", t_fwg)):
        rows.append([label, t * 1e6, f"{t / t_np:.2f}x", (t - t_np) * 1e6, flops / t / 1e9])
    table("(b) matmul 32x256 @ 256x256 float32",
          ["path", "µs per call", "vs numpy", "overhead µs", "GFLOP/s"], rows)


def bench_transposed_weight(quick: bool) -> None:
    """kernels/matmul.py computes a thin `h @ W.T` as `(W @ h.T).T` plus a copy; this is the
    measurement behind where it does so (time of the swap / time of the direct call)."""
    rng = np.random.default_rng(0)
    number, repeat = (5, 3) if quick else (20, 5)
    dims = (65, 128, 256, 512, 1024)
    rows = []
    for m in (1, 8, 32, 64):
        for k in dims:
            cells = []
            for n in dims:
                h = rng.standard_normal((m, k)).astype(np.float32)
                w = rng.standard_normal((n, k)).astype(np.float32)
                direct = per_call(lambda: np.matmul(h, w.T), number, repeat)
                swapped = per_call(lambda: np.ascontiguousarray(np.matmul(w, h.T).T), number, repeat)
                cells.append(f"{swapped / direct:.2f}")
            rows.append([str(m), str(k)] + cells)
    table("(b') h (m, k) @ W.T (k, n) float32: time of (W @ h.T).T + copy / time of np.matmul(h, W.T)",
          ["m", "k"] + [f"n={n}" for n in dims], rows)



# ----------------------------------------------------------------------------- (c) GFLOP/s


def bench_matmul_gflops(quick: bool) -> None:
    from tinygrad_rnn.kernels import matmul as M

    rng = np.random.default_rng(0)
    shapes = [(32, 256, 256), (512, 512, 512), (2048, 2048, 2048)]
    rows = []
    results = {}
    for n, k, m in shapes:
        a = rng.standard_normal((n, k)).astype(np.float32)  # A (n, k)
        b = rng.standard_normal((k, m)).astype(np.float32)  # B (k, m)
        g = rng.standard_normal((n, m)).astype(np.float32)  # dC (n, m)
        bt = rng.standard_normal((k, m)).astype(np.float32)  # B for dA = dC @ B^T, (n, m) x (k, m)
        flops = 2 * n * k * m
        big = flops > 1e9
        number = 1 if flops > 1e8 else 20
        repeat = (3 if quick else 5) if big else (5 if quick else 9)
        products = {  # name: (loop kernel, its arguments, the same product through BLAS)
            "C = A @ B": (M.matmul_loop, (a, b), lambda: a @ b),
            "dA = dC @ B^T": (M.matmul_nt_loop, (g, bt), lambda: g @ bt.T),
            "dB = A^T @ dC": (M.matmul_tn_loop, (a, g), lambda: a.T @ g),
        }
        for prod, (kernel, args, blas) in products.items():
            t_blas = per_call(blas, number, repeat)
            if quick and big:
                t_loop = float("nan")
            else:
                # OpenBLAS's and numba's thread pools each spin-wait for a while after a call and
                # starve each other (see the "interleaved" table below): let BLAS's go idle first
                time.sleep(0.5)
                t_loop = per_call(lambda: kernel(*args), number, repeat)
            results[(n, prod)] = (t_blas, t_loop)
            rows.append([f"{n}x{k}x{m}", prod, flops / t_blas / 1e9, flops / t_loop / 1e9,
                         f"{t_loop / t_blas:.1f}x" if t_loop == t_loop else "skipped"])
    table("(c) float32 matmul GFLOP/s: numpy BLAS vs the numba loop kernels (kernels/matmul.py, parallel=True)",
          ["shape n x k x m", "product", "BLAS", "numba loop", "BLAS faster by"], rows)

    # the thread-pool fight, measured: one BLAS call and one numba parallel call, alternating
    a = rng.standard_normal((32, 256)).astype(np.float32)
    b = rng.standard_normal((256, 256)).astype(np.float32)
    reps = 5 if quick else 20
    time.sleep(0.5)
    t_blas = per_call(lambda: a @ b, 20, reps)
    time.sleep(0.5)
    t_loop = per_call(lambda: M.matmul_loop(a, b), 20, reps)
    time.sleep(0.5)
    t_pair = per_call(lambda: (a @ b, M.matmul_loop(a, b)), 1, reps)
    table("(c') interleaving multi-threaded OpenBLAS with a numba parallel=True kernel, 32x256x256",
          ["what", "µs per call"],
          [["BLAS alone", t_blas * 1e6], ["matmul_loop alone", t_loop * 1e6],
           ["BLAS then matmul_loop, alternating (per pair)", t_pair * 1e6]])


# ----------------------------------------------------------------------------- (d) compile & import


def _probe_args(name: str):
    """Small float32 arguments for kernel `name` (the compile probe), or None if unknown."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    g = rng.standard_normal((8, 5)).astype(np.float32)
    t = np.array([0, 1, 2, 3, 4, -100, 0, 1], dtype=np.int64)
    lse = np.log(np.exp(x).sum(axis=1))
    z = np.zeros_like(x)
    args = {
        "tanh_backward": (g, x), "sigmoid": (x,), "sigmoid_backward": (g, x), "relu_backward": (g, x),
        "matmul": (x, x.T.copy()), "matmul_loop": (x, x.T.copy()), "matmul_nt_loop": (x, x),
        "matmul_tn_loop": (x, x), "max_lastdim": (x,), "logsumexp_lastdim": (x,),
        "softmax_lastdim": (x,), "softmax_backward": (g, x), "log_softmax_lastdim": (x,),
        "log_softmax_backward": (g, x), "cross_entropy_forward": (x, t, -100),
        "cross_entropy_backward": (g[:, 0].copy(), np.exp(x - lse[:, None]), np.ones(8, np.float32), t, -100),
        "sum_rows": (g,),
        "gather_rows": (x, np.array([0, 3, 3, 7])), "scatter_add_rows": (g, np.arange(8) % 3, 3),
        # optimizer steps update their first arrays in place: copies keep the probe repeatable
        "sgd_step": lambda: (x.copy(), g, z.copy(), 0.1, 0.9, 0.0, 0.0, False, False),
        "adagrad_step": lambda: (x.copy(), g, z.copy(), 0.1, 0.0, 1e-8, False),
        "rmsprop_step": lambda: (x.copy(), g, z.copy(), z.copy(), z.copy(), 0.01, 0.99, 1e-8, 0.0, 0.9, True),
        "adam_step": lambda: (x.copy(), g, z.copy(), z.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1),
    }.get(name)
    return args() if callable(args) else args


def compile_probe() -> None:
    """Runs in a subprocess: first-call time of every numba kernel, printed as JSON."""
    out = {}
    t0 = time.perf_counter()
    import numba

    out["import numba"] = time.perf_counter() - t0
    # numba initialises LLVM and its runtime on the first compile or cache load of a process;
    # a throwaway function takes that cost so the kernels below are charged for their own work
    t0 = time.perf_counter()
    numba.njit(lambda v: v + 1)(1)
    out["numba init + one trivial compile"] = time.perf_counter() - t0
    from tinygrad_rnn.kernels import kernel_pairs

    pairs = kernel_pairs()
    for name, (fast, ref) in sorted(pairs.items()):
        if fast is ref:
            continue  # bound to numpy: nothing to compile
        args = _probe_args(name)
        if args is None:
            print(f"no probe arguments for kernel {name!r}; skipped", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        fast(*args)
        first = time.perf_counter() - t0
        args = _probe_args(name)
        t0 = time.perf_counter()
        fast(*args)
        out[name] = first - (time.perf_counter() - t0)
    print(json.dumps(out))


def bench_compile_and_import(quick: bool) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = {}
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, __file__, "--compile-probe"], env=env,
                                 capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"compile probe failed:\n{res.stderr}")
            sys.stderr.write(res.stderr)
            runs[label] = (json.loads(res.stdout.strip().splitlines()[-1]), time.perf_counter() - t0)
    cold, warm = runs["cold"][0], runs["warm"][0]
    for name in cold:
        rows.append([name, cold[name] * 1e3, warm[name] * 1e3, f"{cold[name] / max(warm[name], 1e-9):.0f}x"])
    kernels = [n for n in cold if not n.startswith(("import numba", "numba init"))]
    rows.append(["all kernels (sum)", sum(cold[n] for n in kernels) * 1e3, sum(warm[n] for n in kernels) * 1e3,
                 f"{sum(cold[n] for n in kernels) / max(sum(warm[n] for n in kernels), 1e-9):.0f}x"])
    rows.append(["whole probe process (wall)", runs["cold"][1] * 1e3, runs["warm"][1] * 1e3,
                 f"{runs['cold'][1] / runs['warm'][1]:.1f}x"])
    table("(d) numba first call (compile or cache load, minus one warm call), fresh NUMBA_CACHE_DIR;\n"
          "    a helper shared by several kernels is charged to the first one (alphabetical order)",
          ["kernel", "cold cache ms", "warm cache ms", "cold/warm"], rows)

    n = 3 if quick else 7
    code = "import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"
    rows = []
    for mod in ("numpy", "tinygrad_rnn", "numba"):
        times = []
        for _ in range(n):
            res = subprocess.run([sys.executable, "-c", code.format(mod=mod)], capture_output=True,
                                 text=True, check=True)
            times.append(float(res.stdout.strip()))
        rows.append([f"import {mod}", statistics.median(times) * 1e3])
    res = subprocess.run([sys.executable, "-c", "import sys, tinygrad_rnn; print('numba' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    rows.append(["numba imported by `import tinygrad_rnn`?", res.stdout.strip()])
    table(f"(d') import time in a fresh interpreter (median of {n}; tinygrad_rnn includes numpy)",
          ["what", "ms"], rows)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats; skip 2048^3 for the loop kernels")
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_probe:
        compile_probe()
        return

    import numba

    import tinygrad_rnn as tg

    print(f"tinygrad_rnn {tg.__version__}, backend {tg.get_backend()}, numpy {np.__version__}, "
          f"numba {numba.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"CPU busy before start (other processes included): {busy_fraction():.0%}")
    t0 = time.perf_counter()
    bench_small_ops(args.quick)
    bench_matmul_paths(args.quick)
    bench_transposed_weight(args.quick)
    bench_matmul_gflops(args.quick)
    bench_compile_and_import(args.quick)
    print(f"\nCPU busy at the end: {busy_fraction():.0%}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
