"""Every example runs: each `examples/*.py` (files starting with "_" are helpers, not examples)
is run with `--quick` in a subprocess. It must exit 0, print a `result: key=value ...` line,
and for the examples known here the values must make sense even at the tiny budget.

An example added later is picked up by the glob; until it gets a check of its own below it
must still run cleanly, print something, and state its result in its docstring (a result
line, if it prints one, must parse)."""
import ast
import math
import pathlib
import subprocess
import sys

import pytest

EXAMPLES_DIR = pathlib.Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return {"True": True, "False": False}.get(text, text)


def parse_result(stdout: str) -> dict:
    """The last `result:` line as {key: float, bool or str}."""
    lines = [line for line in stdout.splitlines() if line.startswith("result:")]
    assert lines, f"no 'result:' line in the output:\n{stdout[-2000:]}"
    pairs = [item.split("=", 1) for item in lines[-1][len("result:"):].split()]
    assert pairs and all(len(p) == 2 for p in pairs), f"malformed result line: {lines[-1]!r}"
    return {k: _value(v) for k, v in pairs}


def perplexity_ok(ppl, uniform, slack=1.0) -> bool:
    """A perplexity a briefly trained model can have: above 1, not far above uniform guessing."""
    return math.isfinite(ppl) and 1 < ppl < slack * uniform


def check_concat_trick(r):
    assert r["value_max_diff"] < 1e-12 and r["grad_max_diff"] < 1e-12 and r["cell_max_diff"] < 1e-12, r
    assert r["gradcheck"] == "passed", r


def check_char_rnn(r):
    assert perplexity_ok(r["val_perplexity"], r["uniform_perplexity"]), r


def check_rnn_from_scratch(r):
    assert perplexity_ok(r["train_perplexity"], r["uniform_perplexity"]), r


def check_min_char_rnn(r):
    assert r["lockstep_grad_rel_diff"] < 1e-12, r  # framework BPTT == hand-written BPTT to rounding
    assert r["agree_until_iteration"] >= 5, r  # and the two trainings start out identical
    assert math.isfinite(r["smooth_loss"]), r


def check_brackets(r):
    for cell in ("rnn", "lstm", "gru"):
        assert 0.4 < r[f"{cell}_accuracy"] <= 1, r  # chance is 1/3 even after a few steps
        assert -1 <= r[f"{cell}_depth_r"] <= 1, r


def check_sequence_classification(r):
    for model in ("bow", "rnn", "gru"):
        assert 0.45 <= r[f"{model}_accuracy"] <= 1, r


def check_bidirectional(r):
    uniform = r["uniform_ppl"]
    for key in ("uni_window_ppl", "bi_window_ppl", "uni_last_ppl", "bi_last_ppl"):
        assert perplexity_ok(r[key], uniform), r
    assert r["bi_window_ppl"] < r["uni_window_ppl"], r  # it peeks at the next character
    assert 0 <= r["uni_word_rate"] <= 1 and 0 <= r["bi_word_rate"] <= 1, r


def check_deep_rnn(r):
    ppls = [v for k, v in r.items() if k.startswith("layers")]
    assert len(ppls) == 3 and all(perplexity_ok(p, r["uniform_ppl"], slack=1.2) for p in ppls), r


def check_no_clipping(r):
    assert perplexity_ok(r["tanh_clip_ppl"], r["uniform_ppl"]), r
    assert r["tanh_clip_max_norm"] > 0, r


def check_no_detach(r):
    assert r["steps"] >= 2, r
    assert r["full_s_per_step"] > r["detached_s_per_step"], r  # the undetached graph keeps growing
    assert math.isfinite(r["full_ppl"]) and math.isfinite(r["detached_ppl"]), r


def check_perplexity_baselines(r):
    assert r["unigram_ppl"] < r["uniform_ppl"], r
    assert r["bigram_ppl"] < r["unigram_ppl"] and r["trigram_ppl"] < r["bigram_ppl"], r
    assert math.isfinite(r["fivegram_ppl"]), r
    assert perplexity_ok(r["rnn_ppl"], r["uniform_ppl"], slack=1.2), r


def check_gradcheck_tour(r):
    assert r == {"composed_passed": True, "function_passed": True, "broken_caught": True,
                 "float32_refused": True}, r


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


def test_examples_are_found():
    names = {p.stem for p in EXAMPLES}
    assert set(CHECKS) <= names, f"checks for missing examples: {set(CHECKS) - names}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_quick(path):
    proc = subprocess.run([sys.executable, str(path), "--quick"], capture_output=True, text=True,
                          timeout=600, cwd=EXAMPLES_DIR.parent)
    assert proc.returncode == 0, f"{path.name} --quick exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    check = CHECKS.get(path.stem)
    if check is not None:
        check(parse_result(proc.stdout))
    else:
        assert proc.stdout.strip(), f"{path.name} --quick printed nothing"
        if "\nresult:" in "\n" + proc.stdout:
            parse_result(proc.stdout)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_states_its_result_and_quick_flag(path):
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "Result" in doc, f"{path.name}: the docstring should state the result it prints"
    assert "--quick" in path.read_text(encoding="utf-8"), f"{path.name}: no --quick flag"
