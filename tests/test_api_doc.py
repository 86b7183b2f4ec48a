"""docs/api.md lists every public name, with the signature the code has, so it cannot rot.

A module's public names are the names not starting with `_` that it defines at top level
(def, class, assignment) or deliberately re-exports: every project import in a package's
`__init__.py`, and imports marked `# noqa: F401` (the linter's "unused on purpose") in a plain
module. Imports a module merely uses (charlm's `Tensor`, optim's `no_grad`), imported modules
and third-party names are not its API. Each name must appear inside a code span in the
`## `module`` section of api.md; functions and classes must appear with their signature as
`inspect.signature` gives it (annotations dropped), and every public attribute a class defines
itself (methods, properties, dataclass fields) must appear in its module's section too.

The CLI section must name every `tinygrad-rnn` subcommand, nested ones too (`viz hidden`), and
each of its options on the first line that names it.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import pathlib
import re
import types

import pytest

from tinygrad_rnn import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"

MODULES = [
    "tinygrad_rnn",
    "tinygrad_rnn.nn",
    "tinygrad_rnn.nn.functional",
    "tinygrad_rnn.nn.init",
    "tinygrad_rnn.nn.utils",
    "tinygrad_rnn.optim",
    "tinygrad_rnn.fast",
    "tinygrad_rnn.text",
    "tinygrad_rnn.models.charlm",
    "tinygrad_rnn.checkpoint",
    "tinygrad_rnn.viz",
    "tinygrad_rnn.debug",
    "tinygrad_rnn.op_table",
]


# ----------------------------------------------------------------------------- what is public
def _is_project_import(node: ast.ImportFrom) -> bool:
    return node.level > 0 or (node.module or "").split(".")[0] == "tinygrad_rnn"


def public_names(modname: str) -> list[str]:
    mod = importlib.import_module(modname)
    path = pathlib.Path(mod.__file__)
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    is_package = path.name == "__init__.py"
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        names.append(n.id)
        elif isinstance(node, ast.ImportFrom) and _is_project_import(node):
            text = "\n".join(lines[node.lineno - 1:node.end_lineno])
            if is_package or "noqa: F401" in text:
                names += [a.asname or a.name for a in node.names]
    out = []
    for name in dict.fromkeys(names):
        if name.startswith("_") or isinstance(getattr(mod, name, None), types.ModuleType):
            continue
        out.append(name)
    return out


def _definition(obj):
    """(source, AST node) of a project function or class, found by its qualified name in its
    module's file. Not by line number: other engineers edit these files while tests run, and
    a line number recorded at import would then point at someone else's code."""
    path = pathlib.Path(importlib.import_module(obj.__module__).__file__)
    src = path.read_text(encoding="utf-8")
    node = ast.parse(src)
    qualname = obj.__qualname__
    if "<locals>" in qualname:  # a decorator's stand-in (hypothesis's st.composite): the def has its name
        qualname = obj.__name__
    for part in qualname.split("."):
        node = next(n for n in node.body
                    if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
    return src, node


def _is_composite(node) -> bool:
    """`@st.composite def f(draw, ...)`: hypothesis passes `draw`, callers write `f(...)`."""
    return any((isinstance(d, ast.Attribute) and d.attr == "composite")
               or (isinstance(d, ast.Name) and d.id == "composite") for d in node.decorator_list)


def signature_text(obj) -> str | None:
    """`(a, b=1e-6, *, c=np.float32)`: the parameters as the source writes them, annotations
    and `self` dropped (and a hypothesis composite's `draw`, which hypothesis passes); None
    where the project wrote no signature (exceptions, `Function`)."""
    if dataclasses.is_dataclass(obj):  # its __init__ is generated: read the fields instead
        src, node = _definition(obj)
        fields = [n for n in node.body if isinstance(n, ast.AnnAssign)]
        return "(" + ", ".join(f.target.id + ("" if f.value is None else f"={ast.get_source_segment(src, f.value)}")
                               for f in fields) + ")"
    fn = obj.__init__ if inspect.isclass(obj) else obj
    if not (inspect.isfunction(fn) and fn.__module__.startswith("tinygrad_rnn")):
        return None
    src, node = _definition(fn)
    a = node.args
    seg = lambda n: ast.get_source_segment(src, n)  # noqa: E731
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + a.defaults
    parts = [p.arg + ("" if d is None else f"={seg(d)}") for p, d in zip(positional, defaults)]
    if a.posonlyargs:
        parts.insert(len(a.posonlyargs), "/")
    if inspect.isclass(obj) or _is_composite(node):
        parts = parts[1:]  # self, or a composite's draw
    if a.vararg:
        parts.append(f"*{a.vararg.arg}")
    elif a.kwonlyargs:
        parts.append("*")
    parts += [k.arg + ("" if d is None else f"={seg(d)}") for k, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        parts.append(f"**{a.kwarg.arg}")
    return "(" + ", ".join(parts) + ")"


def own_members(cls) -> list[str]:
    """Public attributes the class itself defines (inherited ones are documented on the base)."""
    return [n for n in vars(cls) if not n.startswith("_")]


# ----------------------------------------------------------------------------- the doc
def sections() -> dict:
    """{heading's first code span: section text} for every `## ` heading of api.md."""
    text = API_MD.read_text(encoding="utf-8")
    out = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = part.splitlines()[0]
        m = re.match(r"`([^`]+)`", heading)
        if m:
            out[m.group(1)] = part
    return out


def code_text(section: str) -> str:
    """Everything inside inline code spans and fenced blocks, joined by newlines."""
    fenced = re.findall(r"```.*?\n(.*?)```", section, flags=re.S)
    rest = re.sub(r"```.*?```", "", section, flags=re.S)
    # a code span may wrap across lines in the source; Markdown reads the break as a space
    spans = [re.sub(r"\s*\n\s*", " ", m) for m in re.findall(r"`([^`]+)`", rest)]
    return "\n".join(fenced + spans)


def has_token(code: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?!\w)", code) is not None


@pytest.mark.parametrize("modname", MODULES)
def test_every_public_name_is_in_api_md_with_its_signature(modname):
    sec = sections()
    assert modname in sec, f"docs/api.md has no section headed `## `{modname}``"
    code = code_text(sec[modname])
    mod = importlib.import_module(modname)
    problems = []
    for name in public_names(modname):
        obj = getattr(mod, name)
        if not has_token(code, name):
            problems.append(f"{name} is not mentioned")
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            sig = signature_text(obj)
            if sig is not None and f"{name}{sig}" not in code:
                problems.append(f"{name}: write it as `{name}{sig}`")
        if inspect.isclass(obj) and obj.__module__.startswith("tinygrad_rnn"):
            missing = [m for m in own_members(obj) if not has_token(code, m)]
            if missing:
                problems.append(f"{name}: members not mentioned: {', '.join(missing)}")
    assert not problems, f"docs/api.md, section `{modname}`:\n  " + "\n  ".join(problems)


def test_discovery_sees_reexports_and_skips_incidental_imports():
    assert {"Tensor", "gradcheck", "set_backend", "float32"} <= set(public_names("tinygrad_rnn"))
    assert {"cross_entropy", "linear"} <= set(public_names("tinygrad_rnn.nn.functional"))
    charlm = set(public_names("tinygrad_rnn.models.charlm"))
    assert {"train", "CharRNN"} <= charlm and not {"Tensor", "no_grad", "F", "annotations"} & charlm
    assert "nn" not in public_names("tinygrad_rnn")  # a module, reached through its own section
    assert "reduce_case(nonempty=False, max_dims=3)" == "reduce_case" + signature_text(
        importlib.import_module("tinygrad_rnn.op_table").reduce_case)  # a composite: no `draw`


def test_discovery_sees_nested_subcommands():
    cmds = cli_subcommands()
    assert {"train", "eval", "sample", "graph", "viz", "viz hidden", "gradcheck", "profile"} <= set(cmds)
    assert "char" not in " ".join(cmds)  # an option's choices ({char,word}) are not subcommands


# ----------------------------------------------------------------------------- the CLI
def _help(argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main(argv)
    return out.getvalue()


def _subcommands_of(help_text: str) -> list[str]:
    """The choices of a command's subcommand positional: `  {a,b,c}` on a line of its own in
    "positional arguments" (an option's choices follow the option's name instead)."""
    m = re.search(r"^  \{([\w,-]+)\}\s*$", help_text, flags=re.M)
    return m.group(1).split(",") if m else []


def cli_subcommands() -> list[str]:
    """Every subcommand, nested ones as their path ("viz hidden") after their parent ("viz")."""
    top = _subcommands_of(_help(["--help"]))
    assert top, "could not read the subcommands from `tinygrad-rnn --help`"
    out, todo = [], list(top)
    while todo:
        cmd = todo.pop(0)
        out.append(cmd)
        todo[:0] = [f"{cmd} {c}" for c in _subcommands_of(_help([*cmd.split(), "--help"]))]
    return out


def test_every_cli_subcommand_and_option_is_in_api_md():
    sec = sections()
    assert "tinygrad-rnn" in sec, "docs/api.md has no section headed `## `tinygrad-rnn``"
    code = code_text(sec["tinygrad-rnn"])
    problems = []
    for cmd in cli_subcommands():
        named = re.compile(rf"tinygrad-rnn {re.escape(cmd)}(?![\w-])")
        if not named.search(code):
            problems.append(f"subcommand {cmd!r} is not mentioned as `tinygrad-rnn {cmd}`")
            continue
        options = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", _help([*cmd.split(), "--help"]))) - {"--help"}
        line = next(ln for ln in code.splitlines() if named.search(ln))
        missing = sorted(o for o in options if not re.search(rf"{re.escape(o)}(?![\w-])", line))
        if missing:
            problems.append(f"`tinygrad-rnn {cmd}` line lacks options {missing}")
    assert not problems, "docs/api.md, CLI section:\n  " + "\n  ".join(problems)

