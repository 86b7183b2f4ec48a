"""Run one example over several seeds and show each value of its `result:` line per seed, with
the range: where the figures in an example's docstring and the bounds in
tests/test_examples.py come from. Not an example itself (the leading underscore).

    python examples/_seeds.py sequence_classification                 # seeds 0-4, default budget
    python examples/_seeds.py deep_rnn --quick --seeds 0 1 2 3 4      # the budget the test runs

Each run is a fresh interpreter, exactly as `python examples/NAME.py --seed S [--quick]`.
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def result_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("result:")]
    if not lines:
        fail(f"no 'result:' line in the output:\n{stdout[-2000:]}")
    return dict(item.split("=", 1) for item in lines[-1][len("result:"):].split())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("example", help="the example's name, e.g. deep_rnn")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--quick", action="store_true", help="pass --quick to the example")
    args = ap.parse_args(argv)
    script = HERE / f"{args.example}.py"
    if not script.is_file() or args.example.startswith("_"):
        fail(f"no example {args.example!r} in {HERE}")

    runs = {}
    for seed in args.seeds:
        cmd = [sys.executable, str(script), "--seed", str(seed)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        if proc.returncode != 0:
            fail(f"{' '.join(cmd[1:])} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        runs[seed] = result_line(proc.stdout)
        print(f"seed {seed}: " + " ".join(f"{k}={v}" for k, v in runs[seed].items()), flush=True)

    print(f"\n{'':24}" + "".join(f"{f'seed {s}':>11}" for s in args.seeds) + "  range")
    for key in runs[args.seeds[0]]:
        values = [runs[s].get(key, "-") for s in args.seeds]
        try:
            numbers = [float(v) for v in values]
            span = f"  {min(numbers):g} - {max(numbers):g}"
        except ValueError:
            span = ""
        print(f"{key:24}" + "".join(f"{v:>11}" for v in values) + span)
    return runs


if __name__ == "__main__":
    main()
