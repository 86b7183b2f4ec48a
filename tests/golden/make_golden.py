"""Write the golden set: every case of tests/golden/cases.py run with the tinygrad_rnn that is
imported, its arrays stored in tests/golden/<family>.npz (no pickles), for tests/test_golden.py
to compare bit for bit with later commits.

    python tests/golden/make_golden.py                       # with the installed checkout
    PYTHONPATH=/path/to/other/checkout python tests/golden/make_golden.py --out DIR

environment.json records what besides the code decides the bits (numpy, numba, the BLAS
kernels picked for the CPU, the CPU numba compiles for): the same code gives other bits on
another machine, where the test skips. To compare commits there, capture the set there at
387c2fe first (git worktree add DIR 387c2fe; PYTHONPATH=DIR python tests/golden/make_golden.py).

It is meant to be run once, at the commit the set pins (387c2fe, before the engine redesign of
issue 26), not to refresh the files after a change: a change in these bits is a change users see.

The fuzz programs are drawn once from tests/fuzz_programs.py's hypothesis strategy with a fixed
seed, generation only, no example database (hypothesis's public API for a reproducible draw),
and stored as data in fuzz.npz, so the comparison never draws again: neither a new hypothesis
version nor a change to the generator can change what the golden set runs. Programs too close
to a kink (tests/test_fuzz.py's MARGIN) or with a value that is not finite are left out, so the
set holds ordinary inputs only.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # tests/ (fuzz_programs) and this directory (cases)

import tinygrad_rnn as tg  # noqa: E402

import cases  # noqa: E402

N_PROGRAMS = 200
SEED = 26  # the number
MARGIN = 1e-4  # as tests/test_fuzz.py


def draw_programs(n: int, seed: int) -> list:
    """The first `n` distinct fair programs hypothesis generates from `seed`, as plain data."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    from fuzz_programs import programs

    drawn = []

    @fixed_seed(seed)
    @settings(max_examples=3 * n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(program=programs())
    def collect(program):
        drawn.append(program)

    collect()
    kept, seen = [], set()
    for program in drawn:
        data = cases.program_to_json(program)
        key = json.dumps(data)
        if key in seen or not _fair(program):
            continue
        seen.add(key)
        kept.append(data)
        if len(kept) == n:
            return kept
    raise RuntimeError(f"hypothesis gave only {len(kept)} fair distinct programs of {len(drawn)} drawn")


def _fair(program) -> bool:
    tg.set_backend("numba")
    for dtype in (np.float64, np.float32):
        _, traced = program.compile(dtype)
        leaves = [tg.Tensor(v.astype(dtype), requires_grad=True) for v in program.leaf_values]
        loss, nodes = traced(*leaves)
        loss.backward()
        values = {name: t.data for name, t in nodes.items()}
        if not all(np.all(np.isfinite(v)) for v in values.values()) or not np.isfinite(loss.data):
            return False
        if not all(leaf.grad is None or np.all(np.isfinite(leaf.grad.data)) for leaf in leaves):
            return False
        if dtype == np.float64 and program.kink_margin(values) < MARGIN:
            return False
    return True


def run_twice(name: str, case) -> dict:
    """The case's arrays, after checking that a second run gives the very same bits."""
    first, second = case(), case()
    assert first.keys() == second.keys(), name
    for key, a in first.items():
        assert a.dtype == second[key].dtype and a.tobytes() == second[key].tobytes(), \
            f"{name}: {key} differs between two runs in one process"
    return first


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="directory for the .npz files")
    parser.add_argument("--programs-from", type=pathlib.Path, metavar="FUZZ_NPZ",
                        help="take the fuzz programs stored in this fuzz.npz instead of drawing them (3-4 minutes)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"tinygrad_rnn from {pathlib.Path(tg.__file__).parent}")
    t0 = time.perf_counter()
    if args.programs_from:
        with np.load(args.programs_from, allow_pickle=False) as z:
            blob = z["programs"]
        programs = cases.load_programs(blob)
    else:
        programs = draw_programs(N_PROGRAMS, SEED)
        blob = np.frombuffer(json.dumps(programs).encode(), np.uint8)
    print(f"{len(programs)} fuzz programs in {time.perf_counter() - t0:.1f} s")
    (args.out / "environment.json").write_text(json.dumps(cases.environment(), indent=1) + "\n")
    for family, family_cases in cases.families(programs).items():
        t0 = time.perf_counter()
        arrays = {"programs": blob} if family == "fuzz" else {}
        for name, case in family_cases.items():
            for key, a in run_twice(f"{family}/{name}", case).items():
                arrays[f"{name}/{key}"] = a
        path = args.out / f"{family}.npz"
        np.savez_compressed(path, **arrays)
        print(f"{path.name}: {len(family_cases)} cases, {len(arrays)} arrays, "
              f"{path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
