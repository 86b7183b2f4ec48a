"""Pictures of what the engine does: the graph behind a tensor, gradients flowing back through
time, and what a trained char-RNN's hidden units do while it reads.

- `to_dot` / `write_graph`: the recorded graph as Graphviz DOT. A weight used at every time
  step is one node with one edge per use: BPTT's shared weights, visible.
- `grad_norms_through_time`: ||dL/dh_t|| for every step t, read off hooks on the hidden
  states; with `spectral_radius` and `power_norms`, the eigenvalue argument for why plain RNN
  gradients vanish or explode.
- `hidden_heatmap`: a char-RNN's hidden units (rows) over the characters of a text (columns).

Plots use matplotlib's Figure API (files only, no pyplot state); it is imported only when a
plot is drawn.
"""
from __future__ import annotations

import math
import pathlib
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np

from .tensor import Tensor

# ----------------------------------------------------------------------------- the graph
GRAPH_FREED = ("the graph behind this tensor was freed by backward(); call "
               "backward(retain_graph=True), or draw the graph before backward()")


@dataclass
class Node:
    id: str
    kind: str  # "op" (a Function and the tensor it made), "leaf" (requires grad) or "const"
    label: str  # op name or tensor name
    shape: tuple
    grad_shape: tuple | None = None
    is_root: bool = False


@dataclass
class Graph:
    nodes: list = field(default_factory=list)
    edges: list = field(default_factory=list)  # (from id, to id): data flows from -> to

    def count(self, kind: str) -> int:
        return sum(n.kind == kind for n in self.nodes)

    def uses(self, label: str) -> int:
        """How many edges leave the node(s) labelled `label`: a shared weight's uses."""
        ids = {n.id for n in self.nodes if n.label == label}
        return sum(src in ids for src, _ in self.edges)


def _param_names(params) -> dict:
    """{id(tensor): name} from a Module, a dict, or (name, tensor) pairs."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        params = params.named_parameters()
    items = params.items() if isinstance(params, dict) else params
    return {id(t): name for name, t in items}


def collect_graph(tensor: Tensor, params=None) -> Graph:
    """The nodes and edges behind `tensor`, walked iteratively from the output to the leaves.

    One node per Function (labelled with its output's shape) and one per tensor input that has
    no Function behind it: a leaf if it requires grad, else a constant. Python numbers passed
    to ops are not drawn. Nodes are numbered in the order the walk meets them.
    """
    names = _param_names(params)
    graph, node_of = Graph(), {}

    def node_for(t: Tensor) -> tuple[str, bool]:
        """(node id, whether it is new) for the tensor's Function, or for the tensor itself."""
        key = id(t._ctx) if t._ctx is not None else id(t)
        if key in node_of:
            return node_of[key], False
        nid = f"n{len(node_of)}"
        node_of[key] = nid
        grad = tuple(t.grad.shape) if t.grad is not None else None
        if t._ctx is not None:
            node = Node(nid, "op", t._ctx.name(), tuple(t.shape), grad)
        else:
            label = names.get(id(t)) or t.name or ("leaf" if t.requires_grad else "const")
            node = Node(nid, "leaf" if t.requires_grad else "const", label, tuple(t.shape), grad)
        graph.nodes.append(node)
        return nid, True

    node_for(tensor)
    graph.nodes[0].is_root = True
    stack = [tensor]
    while stack:
        t = stack.pop()
        fn = t._ctx
        if fn is None:
            continue
        if fn.parents is None:
            raise RuntimeError(f"collect_graph: {GRAPH_FREED}")
        here = node_of[id(fn)]
        for p in fn.parents:
            if isinstance(p, Tensor):
                pid, new = node_for(p)
                graph.edges.append((pid, here))
                if new:
                    stack.append(p)
    return graph


_STYLE = {
    "op": 'shape=box, style="rounded,filled", fillcolor="#eeeeee"',
    "leaf": 'shape=box, style=filled, fillcolor="#a6cee3"',
    "const": 'shape=box, style=dashed, fontcolor="#666666"',
}


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def to_dot(tensor: Tensor, params=None, show_grads: bool = False, rankdir: str = "LR") -> str:
    """Graphviz DOT of the graph behind `tensor`; data flows along the arrows.

    `params` (a Module, a dict or `named_parameters()` pairs) names the leaves; otherwise a
    leaf shows its `Tensor.name`. `show_grads` adds each node's `.grad` shape: draw after
    `backward(retain_graph=True)`, since a plain backward frees the graph it walked.
    """
    graph = collect_graph(tensor, params)
    lines = ["digraph tinygrad_rnn {", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10]; edge [color="#555555"];']
    for n in graph.nodes:
        label = f"{n.label}\n{_shape_text(n.shape)}"
        if show_grads and n.grad_shape is not None:
            label += f"\ngrad {_shape_text(n.grad_shape)}"
        style = _STYLE[n.kind] + (", penwidth=2" if n.is_root else "")
        lines.append(f"  {n.id} [label={_quote(label)}, {style}];")
    lines += [f"  {a} -> {b};" for a, b in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(tensor: Tensor, path, params=None, show_grads: bool = False, fmt: str = "svg"):
    """Write `path` with suffix .dot, and render it to `fmt` (svg or png) when Graphviz's `dot`
    is installed. Returns (dot path, rendered path or None)."""
    path = pathlib.Path(path)
    dot_path = path.with_suffix(".dot")
    dot_path.parent.mkdir(parents=True, exist_ok=True)
    dot_path.write_text(to_dot(tensor, params, show_grads), encoding="utf-8")
    return dot_path, render_dot(dot_path, fmt)


# Graphviz's layout time grows fast with the graph: an 80-step RNN graph took over a minute
_DOT_TIMEOUT_S = 60


def render_dot(dot_path, fmt: str = "svg"):
    """`dot -T<fmt>` beside the .dot file; None when Graphviz is not installed. Raises
    RuntimeError when `dot` fails or takes over a minute (it is stopped then)."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    out = pathlib.Path(dot_path).with_suffix("." + fmt)
    try:
        subprocess.run([exe, f"-T{fmt}", str(dot_path), "-o", str(out)], check=True, capture_output=True,
                       timeout=_DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        out.unlink(missing_ok=True)
        raise RuntimeError(f"Graphviz's dot did not finish rendering {dot_path} in {_DOT_TIMEOUT_S} s and was "
                           f"stopped; the .dot file is there to render with more patience, or draw fewer steps")
    except subprocess.CalledProcessError as e:
        detail = " ".join(e.stderr.decode(errors="replace").split())[:200] or f"exit status {e.returncode}"
        raise RuntimeError(f"Graphviz's dot failed on {dot_path}: {detail}")
    return out


GRAPHVIZ_HINT = ("Graphviz's `dot` is not installed, so only the .dot file was written; to render it, "
                 "install graphviz (apt-get install graphviz, or brew install graphviz) and run "
                 "`dot -Tsvg {dot} -o {svg}`, or paste the file into any online Graphviz viewer.")


def unrolled_cell_loss(steps: int, cell: str = "rnn", input_size: int = 3, hidden: int = 4, seed: int = 0):
    """(loss, named parameters) of a cell stepped `steps` times, a linear read-out at every step
    and the mean cross-entropy over the steps: the char-RNN's graph in miniature. Seeds the
    global generator with `seed` (parameter init), so the same call gives the same graph."""
    from . import nn, rng
    from .nn import functional as F

    if steps < 1:
        raise ValueError(f"unrolled_cell_loss: steps must be at least 1, got {steps}")
    rng.manual_seed(seed)
    Cell = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]
    step, head = Cell(input_size, hidden), nn.Linear(hidden, input_size)
    params = dict(step.named_parameters())
    params.update({f"head.{k}": v for k, v in head.named_parameters()})
    gen = np.random.default_rng(seed)
    zeros = np.zeros((1, hidden), np.float32)
    state = (Tensor(zeros, name="h0"), Tensor(zeros, name="c0")) if cell == "lstm" else Tensor(zeros, name="h0")
    losses = []
    for t in range(steps):
        x = Tensor(gen.standard_normal((1, input_size)).astype(np.float32), name=f"x[{t}]")
        state = step(x, state)
        h = state[0] if isinstance(state, tuple) else state
        losses.append(F.cross_entropy(head(h), np.array([t % input_size])))
    return sum(losses[1:], losses[0]) / steps, params


# ----------------------------------------------------------------------------- gradients through time
def _last_step_loss(hs: list) -> Tensor:
    """<h_T, v> with v constant and ||v|| = 1, so ||dL/dh_T|| = 1 and the curve reads as a ratio."""
    h = hs[-1]
    v = np.full(h.shape, 1 / math.sqrt(h.data.size), h.dtype)
    return (h * Tensor(v)).sum()


def grad_norms_through_time(cell, xs, h0=None, loss_fn=None, clip: float | None = None) -> np.ndarray:
    """||dL/dh_t|| (Frobenius, over the batch) for t = 0..T-1, where h_t = cell(xs[t], h_{t-1}).

    `xs` is (T, B, input_size). The default loss touches only the last state, <h_{T-1}, v>
    with ||v|| = 1, so entry t shows how much gradient survives T-1-t steps back. `loss_fn(hs)`
    gets the list of hidden states and returns a scalar. An LSTM's h is tracked (its c also
    carries gradient). `clip` caps the norm of each dL/dh_t as it flows back (clipping inside
    BPTT, as Graves (2013) did for LSTMs); the recorded norms are the clipped ones. Clipping
    all parameter gradients by one global norm afterwards (`clip_grad_norm_`) would instead
    scale every entry by the same factor and leave the curve's shape alone.

    The cell's parameter gradients are left as they were.
    """
    xs = xs if isinstance(xs, Tensor) else Tensor(np.asarray(xs))
    params = list(cell.parameters())
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None  # backward accumulates in place: keep it off the caller's arrays
    norms = np.zeros(xs.shape[0])
    state, hs = h0, []
    for t in range(xs.shape[0]):
        state = cell(xs[t], state)
        h = state[0] if isinstance(state, tuple) else state
        h.register_hook(_norm_recorder(norms, t, clip))
        hs.append(h)
    loss = (loss_fn or _last_step_loss)(hs)
    try:
        loss.backward()
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return norms


def _norm_recorder(norms: np.ndarray, t: int, clip: float | None):
    def hook(grad: Tensor):
        norm = float(np.linalg.norm(grad.data))
        if clip is not None and norm > clip:
            norms[t] = clip
            return Tensor(grad.data * (clip / norm))
        norms[t] = norm
        return None
    return hook


def spectral_radius(W) -> float:
    """max |eigenvalue| of a square matrix: the growth rate of ||W^k|| for large k."""
    W = np.asarray(W.data if isinstance(W, Tensor) else W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"spectral_radius: expected a square matrix, got shape {W.shape}")
    return float(np.max(np.abs(np.linalg.eigvals(W)))) if W.size else 0.0


def power_norms(W, steps: int) -> np.ndarray:
    """Spectral norms ||W^k||_2 for k = 1..steps.

    Backpropagating through k linear steps multiplies the gradient by (W^T)^k, whose norm grows
    like rho(W)^k (Gelfand's formula): the linear core of vanishing and exploding gradients,
    before the activations' derivatives (<= 1 for tanh and relu, <= 1/4 for sigmoid) shrink it.
    """
    W = np.asarray(W.data if isinstance(W, Tensor) else W, dtype=np.float64)
    out, P = np.empty(steps), np.eye(W.shape[0])
    for k in range(steps):
        P = P @ W
        out[k] = np.linalg.norm(P, 2)
    return out


# ----------------------------------------------------------------------------- hidden units
@dataclass
class HiddenActivity:
    states: np.ndarray  # (T, H): the last layer's hidden state after each token
    speed: np.ndarray  # (H,): mean |h_t - h_{t-1}| of each unit
    order: np.ndarray  # unit indices, slowest-changing first
    shown: np.ndarray  # the units drawn, top to bottom
    text: str


def hidden_activity(model, vocab, text: str) -> HiddenActivity:
    """Run `model` (a CharRNN) over `text` from a zero state and record its top hidden layer,
    one row per token (character, or word at word level)."""
    from .autograd import no_grad

    ids = vocab.encode(text)[None, :]
    if ids.shape[1] < 2:
        raise ValueError(f"hidden_activity: need a text of at least 2 {vocab.level}s, got {ids.shape[1]} "
                         f"in {text[:40]!r}")
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            out, _ = model.rnn(model._input(ids))
    finally:
        model.train(was_training)
    states = np.asarray(out.data[0], dtype=np.float64)
    speed = np.abs(np.diff(states, axis=0)).mean(axis=0)
    order = np.argsort(speed, kind="stable")
    return HiddenActivity(states, speed, order, order, text)


def _pick_units(order: np.ndarray, units: int | None) -> np.ndarray:
    """`units` of the sorted units, evenly spread from slowest to fastest."""
    if units is None or units >= len(order):
        return order
    if units < 1:
        raise ValueError(f"hidden_heatmap: units must be at least 1, got {units}")
    return order[np.unique(np.linspace(0, len(order) - 1, units).round().astype(int))]


def _char_label(c: str) -> str:
    return {" ": "\u2423", "\n": "\\n", "\t": "\\t"}.get(c, c)


def hidden_heatmap(model, vocab, text: str, path, units: int | None = None) -> HiddenActivity:
    """PNG heat map of hidden units (rows, slowest-changing at the top) over the tokens of
    `text` (columns: characters, or words at word level). `units` draws that many units
    spread evenly over the speed order; default all. Returns the recorded activity (states,
    speed, order, shown units)."""
    act = hidden_activity(model, vocab, text)
    act.shown = _pick_units(act.order, units)
    # the tokens as the model read them: a word it never saw is labelled <unk>
    tokens = [vocab.tokens[i] for i in vocab.encode(text)]
    T, n = len(tokens), len(act.shown)
    fig = new_figure(figsize=(min(40.0, 2.0 + 0.16 * T), min(30.0, 1.5 + 0.12 * n)))
    ax = fig.subplots()
    lim = max(float(np.abs(act.states).max()), 1e-12)
    im = ax.imshow(act.states[:, act.shown].T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest")
    step = max(1, math.ceil(T / 240))  # past ~240 tokens the labels would overlap
    ax.set_xticks(range(0, T, step))
    ax.set_xticklabels([_char_label(c) for c in tokens[::step]], fontsize=7)
    ax.set_yticks(range(n))
    ax.set_yticklabels([str(u) for u in act.shown], fontsize=6)
    ax.set_xlabel(f"{vocab.level} read")
    ax.set_ylabel("hidden unit (slowest-changing at the top)")
    ax.set_title(f"hidden state after each {vocab.level}")
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return act


def training_curve(history: list, path, title: str = "") -> dict:
    """PNG of a training run's history (a checkpoint's `history`): the training loss of every
    step, its mean over windows of 1/50 of the run, and the validation loss where it was
    measured, in nats per token against steps. Returns {"steps": last step, "val": [(step,
    nats), ...], "best_val": (step, nats) or None}."""
    steps = np.array([r["step"] for r in history])
    loss = np.array([r["loss"] for r in history])
    if len(steps) == 0:
        raise ValueError("training_curve: the history is empty (no step was trained)")
    val = [(r["step"], r["val_nats"]) for r in history if "val_nats" in r]
    fig = new_figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    ax.plot(steps, loss, color="0.8", linewidth=0.5, label="training loss (each step)")
    w = max(1, len(loss) // 50)
    if len(loss) >= 2 * w:
        mean = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], mean, color="C0", label=f"training loss (mean of {w} steps)")
    if val:
        ax.plot(*zip(*val), "o-", color="C3", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per token")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return {"steps": int(steps[-1]), "val": val, "best_val": min(val, key=lambda v: v[1]) if val else None}


def new_figure(**kwargs):
    """A matplotlib Figure that draws to files with Agg; pyplot (and its global backend and
    figure list) stays untouched, so this works headless and inside notebooks alike."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)
