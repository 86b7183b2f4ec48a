"""How close each tolerance in the tests is to the largest error it has to allow.

Runs test files in this process under pytest, several rounds with fresh random data (a new
hypothesis seed and, after the first round, every `np.random.default_rng(seed)` reseeded with
`[seed, round]`), and records every comparison the tests make as error / allowed:

- `np.testing.assert_allclose(a, d, rtol, atol)`: max |a - d| / (atol + rtol |d|);
- `pytest.approx(expected, rel, abs)`: |a - e| / approx's own tolerance;
- `tg.gradcheck`: max |analytic - numeric| / (atol + rtol |numeric|), over every row it checks;
- the helpers with bounds of their own: `test_fuzz.assert_agree`, `test_kernels.assert_matches`.

One line per call site (the chain of test-file lines that led to the comparison): the largest
ratio seen (the tolerance times it is the smallest tolerance of the same shape that would have
passed), the tolerance, the largest absolute error and the test it came from. Below 0.01
("LOOSE"), the tolerance is more than 100 times the largest error seen; "exact": no error at all.

    python tests/measure_tolerances.py                      # the default files, 5 rounds
    python tests/measure_tolerances.py --rounds 10 tests/test_rnn.py -k bptt
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
import traceback
from collections import defaultdict

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_FILES = ["test_ops.py", "test_fuzz.py", "test_rnn.py", "test_nn.py", "test_engine.py",
                 "test_kernels.py", "test_blocks.py", "test_optim.py", "test_debug.py",
                 "test_memory.py"]


class Site:
    def __init__(self):
        self.ratio, self.tol, self.abs_err, self.test, self.count, self.failed = 0.0, "", 0.0, "", 0, 0


class Recorder:
    """A pytest plugin: wraps the comparisons and keeps the worst ratio per call site."""

    def __init__(self):
        self.sites = defaultdict(Site)
        self.test = ""
        self.failed = []
        self.wrapped = False

    # ---------------------------------------------------------------- bookkeeping
    def site(self):
        here = pathlib.Path(__file__).name
        chain = [f"{pathlib.Path(f.filename).name}:{f.lineno}" for f in traceback.extract_stack()
                 if pathlib.Path(f.filename).parent == HERE and not f.filename.endswith(here)]
        chain = [c for i, c in enumerate(chain) if i == 0 or c != chain[i - 1]]  # a @given's two frames
        return " > ".join(chain) if chain else "?"

    def record(self, ratio, tol, abs_err, passed=True, dtype=None):
        """Comparisons that fail are counted, not measured: the tests that plant a bug make
        them fail on purpose, and any other failure shows in pytest's own report. A site that
        compares float32 and float64 results is two sites: each dtype has its own error."""
        s = self.sites[self.site() + (f" [{np.dtype(dtype).name}]" if dtype is not None else "")]
        if not passed:
            s.failed += 1
            return
        s.count += 1
        if s.count == 1 or not ratio <= s.ratio:  # NaN counts as the worst
            s.ratio, s.tol, s.abs_err, s.test = ratio, tol, abs_err, self.test

    def compare(self, measured, orig, *args, **kwargs):
        """Run the comparison `orig`; record `measured` (ratio, tolerance, error) with its outcome."""
        try:
            result = orig(*args, **kwargs)
        except AssertionError:
            if measured:
                self.record(*measured[:3], False, *measured[4:])
            raise
        if measured:
            self.record(*measured)
        return result

    # ---------------------------------------------------------------- the wrappers
    def wrap_allclose(self, orig):
        def assert_allclose(actual, desired, rtol=1e-7, atol=0, *args, **kwargs):
            try:
                dtype = np.asarray(actual).dtype
                a = np.asarray(actual, dtype=np.float64)
                d = np.asarray(desired, dtype=np.float64)
                with np.errstate(invalid="ignore", over="ignore"):
                    same = (a == d) | (np.isnan(a) & np.isnan(d))
                    err = np.where(same, 0.0, np.abs(a - d))
                    allowed = atol + rtol * np.abs(d)
                    ratio = np.where(same, 0.0, err / np.where(allowed > 0, allowed, 1e-300))
                measured = (float(np.max(ratio)), f"rtol={rtol:g} atol={atol:g}", float(np.max(err)), True,
                            dtype if dtype.kind == "f" else None) if err.size else None
            except (TypeError, ValueError):
                measured = None
            return self.compare(measured, orig, actual, desired, rtol, atol, *args, **kwargs)
        return assert_allclose

    def wrap_approx(self, orig):
        recorder = self

        def approx(expected, rel=None, abs=None, nan_ok=False):
            inner = orig(expected, rel=rel, abs=abs, nan_ok=nan_ok)

            class Recording:
                def __eq__(self, actual):
                    equal = inner == actual
                    try:
                        tol = inner.tolerance
                        err = math.fabs(actual - expected)
                        recorder.record(err / tol if tol else (0.0 if err == 0 else math.inf),
                                        f"approx rel={rel} abs={abs}", err, passed=equal)
                    except (TypeError, AttributeError):
                        pass
                    return equal

                def __repr__(self):
                    return repr(inner)
            return Recording()
        return approx

    def wrap_gradcheck(self, module):
        orig_numeric, orig_analytic, orig_gradcheck = module._numeric, module._analytic, module.gradcheck
        numeric_of_call, rows = [], []

        def _numeric(fn, inputs, t, projections, eps):
            out = orig_numeric(fn, inputs, t, projections, eps)
            numeric_of_call.append(out)
            return out

        def _analytic(fn, inputs, wrt, v, sizes):
            out = orig_analytic(fn, inputs, wrt, v, sizes)
            rows.append([g.copy() for g in out])
            return out

        def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, *args, **kwargs):
            numeric_of_call.clear()
            rows.clear()
            passed = False
            try:
                passed = orig_gradcheck(fn, inputs, eps, atol, rtol, *args, **kwargs)
                return passed
            finally:
                worst, worst_err = 0.0, 0.0
                for r, analytic in enumerate(rows):
                    for a, n in zip(analytic, numeric_of_call):
                        if a.size:
                            err = np.abs(a - n[r])
                            ratio = np.max(err / (atol + rtol * np.abs(n[r])))
                            worst, worst_err = max(worst, float(ratio)), max(worst_err, float(np.max(err)))
                if rows:
                    self.record(worst, f"gradcheck rtol={rtol:g} atol={atol:g}", worst_err, passed)
        module._numeric, module._analytic = _numeric, _analytic
        return gradcheck

    def wrap_agree(self, orig):
        def assert_agree(program, got, want, tol, what):
            worst, worst_err = 0.0, 0.0
            for name, w in want.items():
                g = got.get(name)
                if g is None or w is None or np.shape(g) != np.shape(w) or not np.all(np.isfinite(w)):
                    continue
                err = float(np.max(np.abs(np.asarray(g, np.float64) - w), initial=0.0))
                scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
                worst, worst_err = max(worst, err / (tol * scale)), max(worst_err, err / scale)
            measured = (worst, f"tol={tol:g} (x max(1, |want|))", worst_err)
            return self.compare(measured, orig, program, got, want, tol, what)
        return assert_agree

    def wrap_matches(self, module):
        orig = module.assert_matches

        def assert_matches(fast, ref, dtype, scale=0.0, what=""):
            f, r = np.asarray(fast), np.asarray(ref)
            measured = None
            if f.shape == r.shape and f.dtype == r.dtype and f.dtype.kind == "f":
                rtol = module.RTOL[np.dtype(dtype)]
                with np.errstate(invalid="ignore", over="ignore"):
                    special = (np.isnan(f) & np.isnan(r)) | (np.isinf(r) & (f == r))
                    err = np.where(special, 0.0, np.abs(f.astype(np.float64) - r))
                    bound = rtol * (np.abs(r.astype(np.float64)) + np.abs(scale)) + np.finfo(r.dtype).tiny
                if err.size:
                    measured = (float(np.max(err / bound)), f"rtol={rtol:g}", float(np.max(err)), True,
                                np.dtype(dtype))
            return self.compare(measured, orig, fast, ref, dtype, scale, what)
        return assert_matches

    # ---------------------------------------------------------------- pytest hooks
    def pytest_configure(self, config):
        if self.wrapped:  # a later round: the wrappers are in place
            return
        self.wrapped = True
        import tinygrad_rnn
        module = sys.modules["tinygrad_rnn.gradcheck"]
        tinygrad_rnn.gradcheck = module.gradcheck = self.wrap_gradcheck(module)
        np.testing.assert_allclose = self.wrap_allclose(np.testing.assert_allclose)
        pytest.approx = self.wrap_approx(pytest.approx)

    def pytest_collection_modifyitems(self, items):
        seen = set()
        for item in items:
            module = getattr(item, "module", None)
            if module is None or id(module) in seen:
                continue
            seen.add(id(module))
            if getattr(module, "_measured", False):  # modules stay imported across rounds
                continue
            module._measured = True
            if hasattr(module, "assert_agree"):
                module.assert_agree = self.wrap_agree(module.assert_agree)
            if hasattr(module, "assert_matches") and hasattr(module, "RTOL"):
                module.assert_matches = self.wrap_matches(module)

    def pytest_runtest_setup(self, item):
        self.test = item.nodeid.split("::", 1)[-1]

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)


def reseed(round_):
    """From round 1 on, every np.random.default_rng(int) draws other numbers, the same ones
    for equal seeds (so tests comparing two generators of one seed still see equal streams)."""
    orig = np.random.default_rng

    def default_rng(seed=None):
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return orig([int(seed), round_])
        return orig(seed)
    return orig, default_rng


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs with fresh random data (default 5)")
    parser.add_argument("--examples", type=int, default=40, help="hypothesis examples per test "
                        "where the test sets no number of its own (default 40, as the ci profile)")
    parser.add_argument("-k", default="", help="pytest -k: which tests to run")
    parser.add_argument("--out", help="write the table here after every round (else: stdout at the end)")
    parser.add_argument("files", nargs="*", help="test files (default: the unit-test files)")
    args = parser.parse_args(argv)
    files = args.files or [str(HERE / f) for f in DEFAULT_FILES]

    from hypothesis import HealthCheck, settings
    settings.register_profile("measure", deadline=None, max_examples=args.examples, database=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture])
    os.environ["HYPOTHESIS_PROFILE"] = "measure"

    recorder = Recorder()
    for round_ in range(args.rounds):
        orig = np.random.default_rng
        if round_:
            orig, np.random.default_rng = reseed(round_)
        try:
            pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:warnings", "--no-header",
                         f"--hypothesis-seed={round_}", *(["-k", args.k] if args.k else []), *files],
                        plugins=[recorder])
        finally:
            np.random.default_rng = orig
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)
        if args.out:
            report(recorder, round_ + 1, args.out)
    if not args.out:
        report(recorder, args.rounds)


def report(recorder, rounds, path=None):
    """The table so far: on stdout at the end, or into `path` after every round."""
    lines = [f"{len(recorder.sites)} comparison sites, {rounds} rounds; ratio = the largest error / "
             f"the error allowed, over the comparisons that passed (failed: those that did not, as "
             f"a test planting a bug expects)", "",
             f"{'site':52} {'ratio':>8} {'passed':>6} {'failed':>6}  {'tolerance':32} "
             f"{'largest |error|':>15}  worst test"]

    def order(key):
        first = key.split(" > ")[0].split(" [")[0]
        name, line = first.rsplit(":", 1) if ":" in first else (first, "0")
        return name, int(line), key
    for key in sorted(recorder.sites, key=order):
        s = recorder.sites[key]
        flag = "" if not s.count or s.ratio >= 0.01 else "  exact" if s.ratio == 0 else "  LOOSE"
        lines.append(f"{key:52} {s.ratio:8.1e} {s.count:6d} {s.failed:6d}  {s.tol:32} "
                     f"{s.abs_err:15.2e}  {s.test}{flag}")
    if recorder.failed:
        lines += ["", f"{len(set(recorder.failed))} tests failed:", *sorted(set(recorder.failed))]
    text = "\n".join(lines) + "\n"
    if path:
        pathlib.Path(path).write_text(text)
    else:
        print("\n" + text)


if __name__ == "__main__":
    main()
