"""The shape of the code a student reads (issue 26): a textbook engine, every speed trick
behind the `fast/` seam, and a public surface that works as the README writes it."""
import ast
import pathlib
import re
import subprocess
import sys

import pytest

import tinygrad_rnn as tg

PACKAGE = pathlib.Path(tg.__file__).resolve().parent
ENGINE = PACKAGE / "autograd.py"
# names of the speed machinery (fast/): none may appear in the walk
SPEED_NAMES = {"SliceGrad", "ColumnGrad", "RowSumGrad", "OuterGrad", "RowsGrad", "block", "blocks", "twin",
               "run", "runs", "deferred", "owned", "summed", "OUTER_ROWS", "OUTER_MIN_SIZE", "RUNS_KEPT",
               "lazy", "fast", "out_at", "threshold"}


def imports_of(path: pathlib.Path) -> set:
    """Every module `path` imports, relative ones spelled from the package root ('.fast')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names |= {base} | {f"{base}.{a.name}" if node.module else f"{base}{a.name}" for a in node.names}
    return names


def test_the_engine_imports_nothing_from_fast():
    assert not [n for n in imports_of(ENGINE) if "fast" in n.split(".")]


def test_the_engine_and_its_walk_stay_textbook_sized():
    source = ENGINE.read_text()
    assert len(source.splitlines()) <= 300
    walk = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "_walk")
    lines = ast.get_source_segment(source, walk).splitlines()
    assert len(lines) <= 50, f"_walk is {len(lines)} lines"
    code = "\n".join(line.split("#")[0] for line in lines)  # comments may explain
    assert not SPEED_NAMES & set(re.findall(r"\w+", code)), "the walk names a speed concept"


def test_no_package_file_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


@pytest.mark.parametrize("name", ["viz", "models", "text", "checkpoint", "cli", "fast", "nn", "optim", "debug"])
def test_every_public_submodule_is_an_attribute(name):
    code = f"import tinygrad_rnn as tg; m = tg.{name}; print(m.__name__)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"tinygrad_rnn.{name}", res.stderr


def test_the_lazy_submodules_are_not_imported_until_used():
    code = ("import sys, tinygrad_rnn as tg; lazy = ['viz', 'models', 'text', 'cli', 'checkpoint', 'op_table'];"
            "print([m for m in lazy if 'tinygrad_rnn.' + m in sys.modules]); tg.viz.to_dot;"
            "print('tinygrad_rnn.viz' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "True"]


def test_docs_autograd_quotes_the_engine_as_it_is():
    """docs/autograd.md walks through an RNN's backward quoting the real lines of `_walk` (and of
    the ops it passes through) in ```text blocks: each must still be a verbatim piece of the code."""
    doc = (PACKAGE.parent / "docs" / "autograd.md").read_text()
    quotes = re.findall(r"```text\n(.*?)```", doc, re.S)
    sources = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert quotes
    stale = [q for q in quotes if q.rstrip("\n") not in sources]
    assert not stale, "docs/autograd.md quotes code that is not in the package:\n" + "\n---\n".join(stale)
    walk = ast.get_source_segment(ENGINE.read_text(), next(
        n for n in ast.parse(ENGINE.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "_walk"))
    quoted = "\n".join(quotes)
    missing = [line for line in walk.splitlines()[1:] if line.strip() and line.strip() not in quoted]
    assert not missing, f"lines of _walk the walkthrough does not quote: {missing}"
