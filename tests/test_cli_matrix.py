"""Every `tinygrad-rnn` subcommand with each of its flags at zero, a negative, a huge and a
wrong-type value (issue 23): the exit code is 2 for a value no run could use, 0 where the value
is valid, 3 where it is valid but training diverges, 130 where it is valid and would run for
hours, so the test presses Ctrl-C. Every error is one line on stderr starting `error: `; no
output holds a traceback; no checkpoint that existed before a case is changed or lost.

One table drives the test; `cli.main` runs in this process (no interpreter start per case).
"""
import hashlib
import os
import pathlib
import signal
import threading

import pytest

from tinygrad_rnn import cli
from tinygrad_rnn.models import charlm
from tinygrad_rnn.text import builtin_text

HUGE_INT, HUGE_FLOAT = "1000000000000", "1e12"
ZERO, NEG, HUGE, WRONG = "zero", "negative", "huge", "wrong-type"

# flag -> {value kind: expected exit code}; values are "0", "-1", HUGE_*, "abc"
TRAIN = {
    "--max-vocab": {ZERO: 2, NEG: 2, HUGE: 0, WRONG: 2},
    "--hidden": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},            # huge: the memory estimate refuses it
    "--layers": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--embedding": {ZERO: 0, NEG: 2, HUGE: 2, WRONG: 2},         # 0: one-hot input
    "--dropout": {ZERO: 0, NEG: 2, HUGE: 2, WRONG: 2},
    "--seq-len": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},           # huge: the corpus is too short
    "--batch-size": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--lr": {ZERO: 0, NEG: 2, HUGE: 3, WRONG: 2},                # huge: diverges at step 2, exit 3
    "--clip-norm": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},         # 0: off
    "--clip-value": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},        # 0: off, as for --clip-norm
    "--steps": {ZERO: 0, NEG: 2, HUGE: 130, WRONG: 2},           # 0: a checkpoint of the initial model
    "--epochs": {ZERO: 0, NEG: 2, HUGE: 130, WRONG: 2},
    "--val-frac": {ZERO: 0, NEG: 2, HUGE: 2, WRONG: 2},          # 0: no validation (a note says so)
    "--seed": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},
    "--eval-every": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},
    "--sample-every": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},
}
SAMPLE = {
    "--length": {ZERO: 0, NEG: 2, HUGE: 130, WRONG: 2},
    "--temperature": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},       # huge: near-uniform draws
    "--top-k": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},             # 0 and past the vocabulary: every token
    "--beam": {ZERO: 0, NEG: 2, HUGE: 2, WRONG: 2},              # 0: no beam search
    "--seed": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},
}
GRAPH = {
    "--steps": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--input": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--hidden": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
}
VIZ = {"--units": {ZERO: 2, NEG: 2, HUGE: 0, WRONG: 2}}          # huge: every unit
GRADCHECK = {
    "--examples": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--seed": {ZERO: 0, NEG: 2, HUGE: 0, WRONG: 2},
}
PROFILE = {
    "--steps": {ZERO: 2, NEG: 2, HUGE: 130, WRONG: 2},                # 0: nothing to profile
    "--warmup": {ZERO: 0, NEG: 2, HUGE: 130, WRONG: 2},
    "--hidden": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--seq-len": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--batch-size": {ZERO: 2, NEG: 2, HUGE: 2, WRONG: 2},
    "--top": {ZERO: 2, NEG: 2, HUGE: 0, WRONG: 2},                    # huge: every op
}
FLOATS = {"--dropout", "--lr", "--clip-norm", "--clip-value", "--epochs", "--val-frac", "--temperature"}

# (subcommand argv before the flag, its flags table); {corpus}, {ckpt}, {out}, {run} are filled in
BASES = {
    "train": (["train", "--corpus", "{corpus}", "--hidden", "8", "--seq-len", "8", "--batch-size", "4",
               "--eval-every", "1", "--steps", "2", "--out", "{out}", "--no-progress"], TRAIN),
    "sample": (["sample", "--checkpoint", "{ckpt}", "--length", "5"], SAMPLE),
    "graph": (["graph", "--out", "{out}"], GRAPH),
    "viz-hidden": (["viz", "hidden", "--checkpoint", "{ckpt}", "--text", "the text", "--out", "{out}/h.png"], VIZ),
    "gradcheck": (["gradcheck", "--op", "add", "--examples", "1"], GRADCHECK),
    "profile": (["profile", "--corpus", "{corpus}", "--steps", "1", "--warmup", "0", "--hidden", "8", "--seq-len",
                 "8", "--batch-size", "4"], PROFILE),
}


def value(flag, kind):
    return {ZERO: "0", NEG: "-1", HUGE: HUGE_FLOAT if flag in FLOATS else HUGE_INT, WRONG: "abc"}[kind]


def with_flag(base, flag, v):
    """`base` with `flag v`, replacing the flag if the base sets it (and --steps when --epochs
    is the budget)."""
    argv, i = list(base), 0
    drop = {flag} | ({"--steps"} if flag == "--epochs" else set())
    while i < len(argv):
        if argv[i] in drop:
            del argv[i:i + 2]
        else:
            i += 1
    return argv + [flag, v]


CASES = [pytest.param(name, flag, kind, code, id=f"{name} {flag} {kind}")
         for name, (_, table) in BASES.items() for flag, kinds in table.items() for kind, code in kinds.items()]

# whole-argument cases: (id, argv, exit code)
OTHER = [
    ("train --corpus missing", ["train", "--corpus", "{tmp}/missing.txt", "--no-progress"], 2),
    ("train --corpus directory", ["train", "--corpus", "{tmp}", "--no-progress"], 2),
    ("train --corpus empty", ["train", "--corpus", "{tmp}/empty.txt", "--no-progress"], 2),
    ("train --out is a file", ["train", "--corpus", "{corpus}", "--out", "{tmp}/empty.txt", "--no-progress"], 2),
    ("train --out holds a run", ["train", "--corpus", "{corpus}", "--out", "{run}", "--no-progress"], 2),
    ("train --resume other --hidden", ["train", "--out", "{run}", "--resume", "--hidden", "8", "--no-progress"], 2),
    ("train --resume no --out", ["train", "--resume", "--no-progress"], 2),
    ("train --level bogus", ["train", "--level", "bogus"], 2),
    ("train --cell bogus", ["train", "--cell", "bogus"], 2),
    ("train --optimizer bogus", ["train", "--optimizer", "bogus"], 2),
    ("train --sampling bogus", ["train", "--sampling", "bogus"], 2),
    ("train --unknown-flag", ["train", "--unknown-flag", "1"], 2),
    ("eval --checkpoint missing", ["eval", "--checkpoint", "{tmp}/missing.npz"], 2),
    ("eval --checkpoint not a checkpoint", ["eval", "--checkpoint", "{tmp}/empty.txt"], 2),
    ("eval --checkpoint directory", ["eval", "--checkpoint", "{tmp}"], 2),
    ("eval --corpus missing", ["eval", "--checkpoint", "{ckpt}", "--corpus", "{tmp}/missing.txt"], 2),
    ("eval --corpus unseen characters", ["eval", "--checkpoint", "{ckpt}", "--corpus", "{tmp}/greek.txt"], 2),
    ("eval no --checkpoint", ["eval"], 2),
    ("sample --prime unseen", ["sample", "--checkpoint", "{ckpt}", "--prime", "\u03a9"], 2),
    ("sample --prime empty", ["sample", "--checkpoint", "{ckpt}", "--prime", "", "--length", "3"], 0),
    ("graph --cell bogus", ["graph", "--cell", "bogus"], 2),
    ("graph --format bogus", ["graph", "--format", "bogus"], 2),
    ("graph --out is a file", ["graph", "--out", "{tmp}/empty.txt"], 2),
    ("viz hidden --text empty", ["viz", "hidden", "--checkpoint", "{ckpt}", "--text", "", "--out", "{tmp}/h.png"], 2),
    ("viz hidden --text one char", ["viz", "hidden", "--checkpoint", "{ckpt}", "--text", "a", "--out", "{tmp}/h.png"],
     2),
    ("viz hidden --out the checkpoint", ["viz", "hidden", "--checkpoint", "{ckpt}", "--text", "ab", "--out", "{ckpt}"],
     2),
    ("viz no plot", ["viz"], 2),
    ("viz curve --checkpoint missing", ["viz", "curve", "--checkpoint", "{tmp}/missing.npz"], 2),
    ("viz curve --checkpoint not a checkpoint", ["viz", "curve", "--checkpoint", "{tmp}/empty.txt"], 2),
    ("gradcheck --op no match", ["gradcheck", "--op", "no_such_op"], 2),
    ("gradcheck --backend bogus", ["gradcheck", "--backend", "bogus"], 2),
    ("profile --corpus missing", ["profile", "--corpus", "{tmp}/missing.txt"], 2),
    ("no subcommand", [], 2),
]


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    corpus = tmp / "corpus.txt"
    corpus.write_text(builtin_text()[:3000], encoding="utf-8")
    (tmp / "empty.txt").write_text("")
    (tmp / "greek.txt").write_text("\u03b1\u03b2\u03b3 " * 20, encoding="utf-8")
    run = tmp / "run"
    charlm.train(charlm.TrainConfig(corpus=str(corpus), out=str(run), steps=2, hidden=16, seq_len=8, batch_size=4,
                                    eval_every=1), log=lambda m: None)
    return {"tmp": str(tmp), "corpus": str(corpus), "run": str(run), "ckpt": str(run / "last.npz")}


def checkpoints(root) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in pathlib.Path(root).rglob("*.npz")}


def main_with_ctrl_c(argv, after_s=2.0):
    """cli.main(argv), with SIGINT sent to this process after `after_s` if it is still running."""
    inside, guard = [True], threading.Lock()

    def press():
        with guard:
            if inside[0]:
                os.kill(os.getpid(), signal.SIGINT)
    timer = threading.Timer(after_s, press)
    timer.start()
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse
        return e.code
    finally:
        with guard:
            inside[0] = False
        timer.cancel()


def check(argv, expected, place, capsys, tmp_path):
    before = checkpoints(place["tmp"])
    code = main_with_ctrl_c(argv, after_s=2.0 if expected == 130 else 600.0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == expected, (argv, code, err)
    if expected == 2:
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert out == ""
    after = checkpoints(place["tmp"])
    assert {p: h for p, h in after.items() if p in before} == before  # none lost, none changed
    return err


@pytest.mark.parametrize("name,flag,kind,expected", CASES)
def test_flag_values(name, flag, kind, expected, place, capsys, tmp_path):
    base, _ = BASES[name]
    argv = [a.format(**place, out=tmp_path / "out") for a in with_flag(base, flag, value(flag, kind))]
    err = check(argv, expected, place, capsys, tmp_path)
    if expected == 2 and kind != WRONG:
        assert value(flag, kind) in err or flag.lstrip("-").replace("-", "_") in err, err  # names what was wrong


@pytest.mark.parametrize("argv,expected", [pytest.param(a, c, id=i) for i, a, c in OTHER])
def test_other_arguments(argv, expected, place, capsys, tmp_path):
    check([a.format(**place) for a in argv], expected, place, capsys, tmp_path)
