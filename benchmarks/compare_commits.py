"""Two checkouts of tinygrad_rnn on the charlm step, interleaved in one sitting.

    git worktree add /tmp/old <commit>
    python benchmarks/compare_commits.py /tmp/old . --hidden 64 256 1024

One worker process per checkout (PYTHONPATH pointing at it) builds `charlm_step.py`'s
TinygradStep, or with `--cell lstm|gru` `gated_step.py`'s layer row (this directory's copies, so
both run the same step code), for each hidden size and input (token ids, one-hot rows), and
waits. The driver then asks them in turn for a few timed
steps at a time, the order alternating, so whatever else the machine does hits both alike.
Printed per row: each checkout's median step time and new/old as the median of the per-turn
ratios, over several sittings with fresh processes (one process can be favoured by where it
landed for its whole life), and each sitting's own median ratio. Both workers keep freed memory
in malloc, as the benchmark does. A first turn per row is a warm-up and not counted; the
losses of both are compared, and a difference is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

WORKER = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import charlm_step as cs
rows = {{}}
for line in sys.stdin:
    cmd = json.loads(line)
    key = (cmd["hidden"], cmd["ids"])
    if key not in rows:
        x, y = cs.make_data(cs.SEQ, cs.BATCH, cs.VOCAB)
        if cmd["cell"] == "rnn":
            rows[key] = cs.TinygradStep(cs.make_weights(cmd["hidden"], cs.VOCAB), x, y, ids=cmd["ids"])
        else:  # gated_step.py's layer row
            import gated_step as gs
            w = gs.make_gated_weights(cmd["cell"], cmd["hidden"], 1, cs.VOCAB)
            rows[key] = gs.TinygradGated(cmd["cell"], w, x, y, ids=cmd["ids"])
    row, times, losses = rows[key], [], []
    for _ in range(cmd["steps"]):
        t0 = time.perf_counter()
        losses.append(row.step())
        times.append(time.perf_counter() - t0)
    print(json.dumps({{"times": times, "losses": losses}}), flush=True)
"""


class Worker:
    def __init__(self, checkout: pathlib.Path):
        env = dict(os.environ, PYTHONPATH=str(checkout.resolve()), TINYGRAD_RNN_MALLOC="retain")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER.format(bench=str(HERE))], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


def sitting(args, results: dict) -> None:
    """Fresh workers for both checkouts, every row timed in alternating turns; each row's
    per-turn ratios and step times are added to `results`."""
    workers = {"old": Worker(args.old), "new": Worker(args.new)}
    for hidden in args.hidden:
        for ids in (True, False):
            steps = args.steps or (8 if hidden <= 64 else 4 if hidden <= 256 else 2)
            for w in workers.values():  # warm-up turn: compile, allocate
                w.run(hidden=hidden, ids=ids, steps=steps, cell=args.cell)
            row = results.setdefault((hidden, ids), {"old": [], "new": [], "ratios": [], "sittings": []})
            losses, ratios = {}, []
            for turn in range(args.turns):
                order = ("old", "new") if turn % 2 == 0 else ("new", "old")
                got = {name: workers[name].run(hidden=hidden, ids=ids, steps=steps, cell=args.cell) for name in order}
                for name in order:
                    row[name] += got[name]["times"]
                    losses[name] = got[name]["losses"]
                ratios.append(statistics.median(got["new"]["times"]) / statistics.median(got["old"]["times"]))
            row["ratios"] += ratios
            row["sittings"].append(statistics.median(ratios))
            if losses["old"] != losses["new"]:
                print(f"  H={hidden} {'ids' if ids else 'one-hot'}: the losses differ: old {losses['old'][-1]!r}, "
                      f"new {losses['new'][-1]!r}")
    for w in workers.values():
        w.proc.stdin.close()
        w.proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", type=pathlib.Path)
    ap.add_argument("new", type=pathlib.Path)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--turns", type=int, default=20, help="turns per row, checkout and sitting (default 20)")
    ap.add_argument("--sittings", type=int, default=3,
                    help="fresh worker processes this many times (default 3): a process's own placement in "
                         "memory and on the cores can favour one side for its whole life")
    ap.add_argument("--steps", type=int, help="steps per turn (default 8, 4, 2 by H)")
    ap.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="rnn",
                    help="rnn: charlm_step.py's RNNCell loop (default); lstm, gru: gated_step.py's layer")
    args = ap.parse_args(argv)
    print(f"old = {args.old}, new = {args.new}; {args.sittings} sittings of {args.turns} turns per row, "
          f"order alternating")
    results, t0 = {}, time.perf_counter()
    for _ in range(args.sittings):
        sitting(args, results)
    print(f"{'H':>5} {'input':>8} {'old ms':>8} {'new ms':>8} {'new/old':>8}   per sitting")
    for (hidden, ids), row in results.items():
        old, new = (statistics.median(row[k]) * 1e3 for k in ("old", "new"))
        print(f"{hidden:>5} {'ids' if ids else 'one-hot':>8} {old:8.3f} {new:8.3f} {statistics.median(row['ratios']):8.3f}   "
              + " ".join(f"{r:.3f}" for r in row["sittings"]))
    print(f"({time.perf_counter() - t0:.0f} s; new/old is the median of all turns' ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
