"""Random differentiable programs for the differential fuzzer (tests/test_fuzz.py).

A program is straight-line tinygrad_rnn code over a few leaves that require grad:

    v0 = (x0 @ x1).tanh()
    v1 = v0.sum(dim=1, keepdim=True) + c0
    v2, v3 = v1.split(1, dim=0)
    ...
    loss = (v2 * c7).sum()
    loss = loss + (v9 * -c8).sum()

`programs()` draws one: a random DAG of up to 200 ops (median about 80) taken from every
differentiable op the framework has (`OPS`), on shapes that fit, with intermediates consumed
several times and operands that broadcast. A program is kept as source text and run with `exec`, so the
reproducer printed for a failing example (`Program.source()`) is exactly the code that ran.
Hypothesis shrinks it first: fewer ops, simpler ops, simpler inputs.

Three rules keep every program a fair test of its gradient:

- Values stay bounded. Each node carries a bound on |value|; an op that could blow a value up
  (products, exp, powers, sums) gets an input above `LIMIT` squashed through tanh first. log,
  sqrt, divisors and pow bases see a positive map of their input such as `(x.tanh() + 1.5)`,
  never anything near 0, so nothing is NaN or Inf.
- Kinks are kept at a distance. relu, abs, clamp, maximum/minimum and max/min reductions see
  their input plus a fixed random jitter, so `relu(relu(x))`, `maximum(v, v)` or a max over an
  expanded axis do not sit exactly on their kink; each such op records what its distance to
  the kink is, and `Program.kink_margin(values)` is the smallest one. Tests skip the rare
  program whose margin is too small for finite differences (or float32 rounding) to be fair.
- std is recorded the same way: its gradient is 0/0 where all entries of a slice are equal.

Sinks (nodes no later op consumed) are projected onto fixed random weights and summed into
the scalar `loss`, so every node has a path to the loss.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tolerances import FUZZ_GRADCHECK

MAX_NUMEL = 64  # no node grows past this many elements: small shapes find edge cases faster
MAX_NDIM = 4
LIMIT = 4.0  # an input whose |value| may exceed this is squashed before a growing op
POSITIVE_RANGE = (0.35, 2.75)  # where `positive()` maps any value: away from log's and 1/x's pole

# Every differentiable op: name -> (builder method, the `Function` classes it records). The
# first entry is what hypothesis shrinks an op towards, so it is the simplest one.
OPS: dict = {}


def op(*functions):
    def register(method):
        OPS[method.__name__[len("op_"):]] = (method, functions)
        return method
    return register


@dataclass
class Node:
    name: str
    shape: tuple
    bound: float  # |value| <= bound, a conservative estimate


@dataclass
class Kink:
    """A place where an op is not smooth. `kink_margin` measures, on actual values, how far
    the op's input stayed from it: |x| for relu/abs ("zero"), |a - b| for maximum/minimum
    ("tie"), the distance to the bounds for clamp ("bounds"), the gap between the two largest
    entries of each reduced slice for max/min ("top2"), and std itself for std ("variance": its
    gradient (x - mean) / ((N - correction) std) is 0/0 where all entries are equal)."""
    kind: str
    names: tuple
    arg: object = None


class Program:
    """A drawn program: its leaves (inputs that require grad) and constants as float64 arrays,
    the lines of its body, and the kinks its values must stay away from."""

    def __init__(self, leaves, consts, body, nodes, kinks, ops):
        self.leaves = leaves  # [(name, float64 values)]
        self.consts = consts  # [(name, float64 values)]: tensors that do not require grad
        self.body = body  # lines of code, in order
        self.nodes = nodes  # names of every tensor the body defines, in order
        self.kinks = kinks
        self.ops = ops  # the op kinds drawn, in order (for statistics)
        self._compiled = {}

    @property
    def leaf_values(self):
        return [v for _, v in self.leaves]

    def source(self, dtype=np.float64) -> str:
        """A script that runs the program on both backends, prints how far they differ and,
        in float64, runs gradcheck: what a failing example prints to be pasted."""
        leaves = ", ".join(name for name, _ in self.leaves)
        runner = [
            "",
            "# the leaf values, exactly as drawn",
            "LEAVES = [",
            *[f"    np.array({_fmt(v)}, dtype=np.float64),  # {name}" for name, v in self.leaves],
            "]",
            "",
            "",
            "def run(backend):",
            "    tg.set_backend(backend)",
            "    xs = [tg.Tensor(v.astype(DT), requires_grad=True) for v in LEAVES]",
            "    loss = program(*xs)",
            "    loss.backward()",
            "    return loss.item(), [None if x.grad is None else x.grad.numpy() for x in xs]",
            "",
            "",
            'fast, ref = run("numba"), run("numpy")',
            'print("loss: numba", fast[0], "numpy", ref[0])',
            f'for name, a, b in zip("{leaves}".split(", "), fast[1], ref[1]):',
            '    print(f"{name}.grad: max |numba - numpy| =", None if a is None else np.max(np.abs(a - b)))',
            "if DT == np.float64:",
            '    print("gradcheck:", tg.gradcheck(program, [tg.Tensor(v, requires_grad=True) for v in LEAVES],',
            f'                                     {", ".join(f"{k}={v!r}" for k, v in FUZZ_GRADCHECK.items())}))',
        ]
        return "\n".join(self._module(dtype, traced=False) + runner) + "\n"

    def compile(self, dtype):
        """(program, traced) as functions: `program(*leaves) -> loss`, and `traced`, the same
        code returning `(loss, {name: tensor})` for every leaf and node."""
        key = np.dtype(dtype)
        if key not in self._compiled:
            namespace = {}
            code = compile("\n".join(self._module(dtype, traced=True)), "<fuzz program>", "exec")
            exec(code, namespace)
            self._compiled[key] = (namespace["program"], namespace["traced"])
        return self._compiled[key]

    def _module(self, dtype, traced: bool) -> list:
        leaves = ", ".join(name for name, _ in self.leaves)
        lines = [
            "import numpy as np",
            "import tinygrad_rnn as tg",
            "import tinygrad_rnn.nn.functional as F",
            "from tinygrad_rnn.fast.steps import GRUCellStep, LSTMCellStep, RNNCellStep  # the fused steps nn's cells record",
            "",
            f"DT = np.{np.dtype(dtype).name}  # the program's float dtype: np.float64 or np.float32",
            "WIDE = np.float64",
            *[f"{name} = tg.Tensor(np.array({_fmt(v)}, dtype=DT))" for name, v in self.consts],
            "",
            "",
            f"def program({leaves}):",
            *["    " + line for line in self.body],
            "    return loss",
        ]
        if traced:
            everything = ", ".join(f'"{n}": {n}' for n in [name for name, _ in self.leaves] + self.nodes)
            lines += ["", "", f"def traced({leaves}):", *["    " + line for line in self.body],
                      f"    return loss, {{{everything}}}"]
        return lines

    def line_of(self, name: str) -> str:
        """The body line that defines `name`."""
        for line in self.body:
            targets = line.split(" = ", 1)[0].split(";")[-1]
            if name in [t.strip() for t in targets.split(",")]:
                return line.strip()
        return f"{name}: a leaf"

    def kink_margin(self, values: dict) -> float:
        """The smallest distance between any kink op's input and its kink (see `Kink`)."""
        values = {**dict(self.consts), **values}
        margin = math.inf
        for k in self.kinks:
            x = values.get(k.names[0])  # None: a relu step fed token ids (its one-hot rows in k.arg)
            if k.kind == "zero":
                d = np.abs(x)
            elif k.kind == "tie":
                other = values[k.names[1]] if len(k.names) > 1 else k.arg
                d = np.abs(x - other)
            elif k.kind == "bounds":
                d = np.min([np.abs(x - b) for b in k.arg if b is not None], axis=0)
            elif k.kind == "rnn_relu":  # the pre-activation x W_ih^T + h W_hh^T + b of a relu step
                h, w_ih, w_hh, b_ih, b_hh = (None if n is None else values[n] for n in k.names[1:])
                x = x if k.arg is None else k.arg
                d = np.abs(x @ w_ih.T + h @ w_hh.T + (0 if b_ih is None else b_ih + b_hh))
            elif k.kind == "top2":
                rows = _rows(x, k.arg)
                if rows.shape[1] < 2:
                    continue
                top = np.sort(rows, axis=1)
                d = np.minimum(top[:, -1] - top[:, -2], top[:, 1] - top[:, 0])  # max and min
            else:  # variance
                dims, correction = k.arg
                d = np.sqrt(np.var(x, axis=dims, ddof=correction))
            margin = min(margin, float(np.min(d)) if np.size(d) else math.inf)
        return margin

    def __repr__(self) -> str:
        return f"<program of {len(self.ops)} ops, {len(self.body)} lines>"


def _rows(x, dims):
    """x with `dims` moved last and flattened: one row per reduced slice."""
    dims = tuple(range(x.ndim)) if dims is None else dims
    keep = [i for i in range(x.ndim) if i not in dims]
    return np.transpose(x, keep + list(dims)).reshape(-1, math.prod(x.shape[d] for d in dims))


def _fmt(values) -> str:
    return repr(np.asarray(values).tolist())


def _index_fmt(item) -> str:
    if item is None:
        return "None"
    if item is Ellipsis:
        return "..."
    if isinstance(item, slice):
        text = ":".join("" if p is None else str(p) for p in (item.start, item.stop, item.step))
        return text[:-1] if text.endswith(":") and item.step is None else text
    if isinstance(item, np.ndarray):
        return f"np.array({_fmt(item)})"
    return str(int(item))


def _broadcast(*shapes):
    try:
        out = np.broadcast_shapes(*shapes)
    except ValueError:
        return None
    return out if len(out) <= MAX_NDIM and math.prod(out) <= MAX_NUMEL else None


def _reduced(shape, dims, keepdim):
    return tuple(1 if i in dims else n for i, n in enumerate(shape)) if keepdim else \
        tuple(n for i, n in enumerate(shape) if i not in dims)


def _prime_factors(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


_BOOLEANS = st.booleans()
_sampled_from = functools.lru_cache(maxsize=None)(st.sampled_from)
_integers = functools.lru_cache(maxsize=None)(st.integers)


class _Builder:
    def __init__(self, draw, ops, max_leaf_elements):
        self.draw = draw
        self.op_names = ops
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        self.nodes, self.leaves, self.consts, self.body, self.kinks, self.drawn = [], [], [], [], [], []
        self.leaf_budget = max_leaf_elements

    # ------------------------------------------------------------------ drawing helpers
    # strategies are cached: building and validating a fresh one per draw was half the cost
    def choice(self, options):
        return self.draw(_sampled_from(tuple(options)))

    def flip(self):
        return self.draw(_BOOLEANS)

    def integer(self, lo, hi):
        return self.draw(_integers(lo, hi))

    def pick(self, fits=lambda n: True):
        """An existing node (leaf or result) that `fits`, the most recent first, or None."""
        candidates = [n for n in self.nodes if fits(n)]
        if not candidates:
            return None
        return candidates[-1 - self.integer(0, len(candidates) - 1)]

    def leaf(self, shape) -> Node:
        values = self.draw(hnp.arrays(np.float64, shape, elements=st.floats(-2, 2, allow_subnormal=False)))
        self.leaf_budget -= values.size
        node = Node(f"x{len(self.leaves)}", tuple(shape), 2.0)
        self.leaves.append((node.name, values))
        self.nodes.append(node)
        return node

    def const(self, shape, lo=-1.0, hi=1.0, decimals=2) -> str:
        values = np.round(self.rng.uniform(lo, hi, shape), decimals)
        name = f"c{len(self.consts)}"
        self.consts.append((name, values))
        return name

    def operand(self, shape):
        """A fresh operand of `shape`: a new leaf while the leaf budget lasts, else a constant.
        Returns (text, bound)."""
        if math.prod(shape) <= self.leaf_budget and self.flip():
            node = self.leaf(shape)
            return node.name, node.bound
        return self.const(shape), 1.0

    def node_or_operand(self, shape, limit=LIMIT):
        """(text, bound) of an existing node of `shape` (half the time, if there is one) or a
        fresh operand: how the recurrent steps pick their states and weights."""
        n = self.pick(lambda n: n.shape == shape) if self.flip() else None
        return self.operand(shape) if n is None else self.use(n, limit)

    def use(self, node, limit=LIMIT):
        """(text, bound) for consuming `node`; squashed through tanh if it may exceed `limit`."""
        if node.bound > limit:
            return f"{node.name}.tanh()", 1.0
        return node.name, node.bound

    def positive(self, text, bound):
        """Text of a value in POSITIVE_RANGE computed from `text`."""
        form = self.choice(("tanh", "sigmoid", "square", "exp"))
        if form == "tanh":
            return f"({text}.tanh() + 1.5)"
        if form == "sigmoid":
            return f"({text}.sigmoid() * 2 + 0.5)"
        if bound > 1:
            text = f"{text}.tanh()"
        return f"({text} * {text} + 0.5)" if form == "square" else f"{text}.exp()"

    def emit(self, expr, shape, bound) -> Node:
        assert len(shape) <= MAX_NDIM and 0 < math.prod(shape) <= MAX_NUMEL, f"generator bug: {shape} from {expr}"
        node = Node(f"v{sum(1 for n in self.nodes if n.name[0] == 'v')}", tuple(shape), float(bound))
        self.body.append(f"{node.name} = {expr}")
        self.nodes.append(node)
        return node

    def emit_many(self, expr, shapes, bound) -> list:
        first = sum(1 for n in self.nodes if n.name[0] == "v")
        nodes = [Node(f"v{first + i}", tuple(s), float(bound)) for i, s in enumerate(shapes)]
        targets = ", ".join(n.name for n in nodes) + ("," if len(nodes) == 1 else "")
        self.body.append(f"{targets} = {expr}")
        self.nodes.extend(nodes)
        return nodes

    def jitter(self, shape) -> str:
        """A constant of distinct values in [-1, 1), 0.01 apart (closer only past 200 elements),
        off the round numbers hypothesis likes to draw (so that x + jitter is not exactly 0)."""
        name = f"c{len(self.consts)}"
        grid = np.round(np.linspace(-1.0, 1.0, max(200, 2 * math.prod(shape)), endpoint=False) + 0.0037, 4)
        self.consts.append((name, self.rng.choice(grid, shape or None, replace=False)))
        return name

    def jittered(self, node) -> Node:
        """node + jitter: exact ties (relu of a relu, max over an expanded axis, std over a
        broadcast axis) and exact zeros move apart."""
        text, bound = self.use(node)
        return self.emit(f"{text} + {self.jitter(node.shape)}", node.shape, bound + 1)

    def partner_shape(self, shape):
        """A shape that broadcasts against `shape`: some dims 1, some 1s grown, maybe shorter
        or with new leading dims."""
        out = [self.choice((1, 2, 3)) if n == 1 else self.choice((n, 1)) for n in shape]
        drop = self.integer(0, len(out))
        out = out[drop:]
        if drop == 0 and len(out) < MAX_NDIM:
            out = [self.integer(1, 3) for _ in range(self.integer(0, MAX_NDIM - len(out)))] + out
        return tuple(out)

    def partner(self, a, limit=LIMIT):
        """The other operand of a binary op: `a` itself, another node that broadcasts with it,
        or a fresh operand. Returns (text, bound, result shape)."""
        how = self.choice(("fresh", "node", "self"))
        if how == "node":
            b = self.pick(lambda n: n is not a and _broadcast(a.shape, n.shape) is not None)
            if b is not None:
                return (*self.use(b, limit), _broadcast(a.shape, b.shape))
        if how == "self":
            return (*self.use(a, limit), a.shape)
        shape = self.partner_shape(a.shape)
        if _broadcast(a.shape, shape) is None:
            shape = a.shape
        return (*self.operand(shape), _broadcast(a.shape, shape))

    def dims(self, shape, allow_tuple=True):
        """(dim argument, reduced axes): None, an int (maybe negative) or a tuple of them."""
        nd = len(shape)
        kind = self.choice(("int", "all", "tuple") if nd and allow_tuple else ("int", "all"))
        if kind == "all":
            return None, tuple(range(nd))
        if kind == "int":
            d = self.integer(-max(nd, 1), max(nd, 1) - 1)
            return d, ((d % nd,) if nd else ())
        axes = sorted(self.draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True)))
        return tuple(self.choice((d, d - nd)) for d in axes), tuple(axes)

    # ------------------------------------------------------------------ the program
    def build(self, n_ops) -> Program:
        self.leaf(self.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)))
        for _ in range(n_ops):
            for _attempt in range(20):
                name = self.choice(self.op_names)
                if OPS[name][0](self) is not False:
                    self.drawn.append(name)
                    break
        # consumed means read by a line of the program: an op that gave up half way wrote nothing
        read = {name for line in self.body for name in re.findall(r"\b[xv]\d+\b", line.split(" = ", 1)[1])}
        sinks = [n for n in self.nodes if n.name not in read]
        for i, n in enumerate(sinks):
            # away from 0, so every sink pulls on the loss
            p = self.const(n.shape, 0.1, 1.0) if self.flip() else f"-{self.const(n.shape, 0.1, 1.0)}"
            term = f"({n.name} * {p}).sum()"
            self.body.append(f"loss = {term}" if i == 0 else f"loss = loss + {term}")
        return Program(self.leaves, self.consts, self.body, [n.name for n in self.nodes if n.name[0] == "v"],
                       self.kinks, self.drawn)

    # ------------------------------------------------------------------ elementwise, binary
    @op("Add")
    def op_add(self):
        a = self.pick()
        at, ab = self.use(a)
        bt, bb, shape = self.partner(a)
        form = self.choice(("{a} + {b}", "{a}.add({b})", "{b} + {a}"))
        self.emit(form.format(a=at, b=bt), shape, ab + bb)

    @op("Sub")
    def op_sub(self):
        a = self.pick()
        at, ab = self.use(a)
        bt, bb, shape = self.partner(a)
        # "{b} - {a}": with a constant on the left, only the right side needs a gradient
        self.emit(self.choice(("{a} - {b}", "{a}.sub({b})", "{b} - {a}")).format(a=at, b=bt), shape, ab + bb)

    @op("Mul")
    def op_mul(self):
        a = self.pick()
        at, ab = self.use(a)
        bt, bb, shape = self.partner(a)
        self.emit(self.choice(("{a} * {b}", "{a}.mul({b})", "{b} * {a}")).format(a=at, b=bt), shape, ab * bb)

    @op("Div")
    def op_div(self):
        a = self.pick()
        at, ab = self.use(a)
        bt, bb, shape = self.partner(a)
        if self.flip():
            at, ab, bt, bb = bt, bb, at, ab  # the node divides the other operand
        form = self.choice(("{a} / {b}", "{a}.div({b})", "{a} / -{b}"))
        self.emit(form.format(a=at, b=self.positive(bt, bb)), shape, ab / POSITIVE_RANGE[0])

    @op("Pow")
    def op_pow(self):
        a = self.pick()
        at, ab = self.use(a)
        bt, bb, shape = self.partner(a, limit=2.0)
        base, exponent = self.positive(at, ab), bt
        if self.flip():  # the node is the exponent of the other operand
            base, exponent = self.positive(bt, bb), self.use(a, limit=2.0)[0]
        form = self.choice(("{a} ** {b}", "{a}.pow({b})"))
        self.emit(form.format(a=base, b=exponent), shape, max(POSITIVE_RANGE[1] ** 2, POSITIVE_RANGE[0] ** -2))

    @op("Maximum", "Minimum", "Add")
    def op_maximum(self):
        orig = self.pick()
        a = self.jittered(orig)
        fn = self.choice(("maximum", "minimum"))
        how = self.choice(("self", "node", "number"))
        if how == "number":
            s = self.choice((0.25, -0.5, 1))
            form = self.choice(("tg.{f}({a}, {b})", "{a}.{f}({b})", "tg.{f}({b}, {a})"))
            self.kinks.append(Kink("tie", (a.name,), s))
            self.emit(form.format(f=fn, a=a.name, b=s), a.shape, max(a.bound, 1))
            return
        b = self.pick(lambda n: n is not a and _broadcast(a.shape, n.shape) is not None) if how == "node" else None
        b = b or orig  # maximum(x + jitter, x): the jitter keeps the two sides apart
        self.kinks.append(Kink("tie", (a.name, b.name)))
        form = self.choice(("tg.{f}({a}, {b})", "{a}.{f}({b})"))
        self.emit(form.format(f=fn, a=a.name, b=b.name), _broadcast(a.shape, b.shape), max(a.bound, b.bound))

    @op("Where")
    def op_where(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        if self.flip():
            bt, bb, shape = self.partner(a, limit=math.inf)
        else:
            bt, bb, shape = self.choice(("0.5", "-1", "2.0")), 2.0, a.shape
        cond = self.draw(hnp.arrays(np.bool_, self.partner_shape(shape)))
        if _broadcast(shape, cond.shape) is None:
            cond = cond.reshape(-1)[:1].reshape(())
        cond_text = f"np.array({_fmt(cond)})"
        if self.flip():
            cond_text = f"tg.Tensor({cond_text})"
        order = "{a}, {b}" if self.flip() else "{b}, {a}"
        self.emit(f"tg.where({cond_text}, {order.format(a=at, b=bt)})", _broadcast(shape, cond.shape),
                  max(ab, bb))

    # ------------------------------------------------------------------ elementwise, unary
    @op("Neg")
    def op_neg(self):
        self._unary(self.pick(), self.choice(("-{a}", "{a}.neg()")))

    def _unary(self, a, form, limit=math.inf, bound=None):
        at, ab = self.use(a, limit)
        self.emit(form.format(a=at), a.shape, ab if bound is None else bound(ab))

    @op("Add", "Sub", "Mul", "Div")
    def op_scalar(self):
        a = self.pick()
        s = self.choice((0.5, 2, -1.5, 3))
        form = self.choice(("{a} + {s}", "{s} + {a}", "{a} - {s}", "{s} - {a}", "{a} * {s}", "{s} * {a}",
                            "{a} / {s}"))
        at, ab = self.use(a)
        bound = ab * abs(s) if "*" in form else ab / abs(s) if "/" in form else ab + abs(s)
        self.emit(form.format(a=at, s=s), a.shape, bound)

    @op("Div")
    def op_scalar_over(self):
        a = self.pick()
        at, ab = self.use(a)
        s = self.choice((1, -0.5, 2.0))
        self.emit(f"{s} / {self.positive(at, ab)}", a.shape, abs(s) / POSITIVE_RANGE[0])

    @op("PowScalar")
    def op_pow_scalar(self):
        a = self.pick()
        at, ab = self.use(a)
        if self.flip():
            p = self.choice((2, 3, 1, 0))
            self.emit(self.choice(("{a} ** {p}", "{a}.pow({p})")).format(a=at, p=p), a.shape, max(ab, 1) ** p)
        else:
            text, p = self.choice((("0.5", 0.5), ("-1.5", -1.5), ("2.5", 2.5), ("-1.0", -1.0), ("(1 / 3)", 1 / 3)))
            lo, hi = POSITIVE_RANGE
            self.emit(f"{self.positive(at, ab)} ** {text}", a.shape, max(lo ** p, hi ** p))

    @op("Pow")
    def op_rpow(self):
        a = self.pick()
        at, ab = self.use(a)
        s = self.choice((2.0, 0.5, 3))
        self.emit(f"{s} ** {at}", a.shape, max(s, 1 / s) ** ab)

    @op("Exp")
    def op_exp(self):
        self._unary(self.pick(), self.choice(("{a}.exp()", "tg.exp({a})")), LIMIT, math.exp)

    @op("Log")
    def op_log(self):
        a = self.pick()
        at, ab = self.use(a)
        self.emit(self.choice(("{p}.log()", "tg.log({p})")).format(p=self.positive(at, ab)), a.shape, 1.1)

    @op("Sqrt")
    def op_sqrt(self):
        a = self.pick()
        at, ab = self.use(a)
        self.emit(self.choice(("{p}.sqrt()", "tg.sqrt({p})")).format(p=self.positive(at, ab)), a.shape, 1.7)

    @op("Tanh")
    def op_tanh(self):
        self._unary(self.pick(), self.choice(("{a}.tanh()", "tg.tanh({a})", "F.tanh({a})")), bound=lambda b: 1)

    @op("Sigmoid")
    def op_sigmoid(self):
        self._unary(self.pick(), self.choice(("{a}.sigmoid()", "tg.sigmoid({a})", "F.sigmoid({a})")),
                    bound=lambda b: 1)

    @op("Relu", "Add")
    def op_relu(self):
        a = self.jittered(self.pick())
        self.kinks.append(Kink("zero", (a.name,)))
        self._unary(a, self.choice(("{a}.relu()", "tg.relu({a})", "F.relu({a})")))

    @op("Abs", "Add")
    def op_abs(self):
        a = self.jittered(self.pick())
        self.kinks.append(Kink("zero", (a.name,)))
        self._unary(a, "{a}.abs()")

    @op("Clamp", "Add")
    def op_clamp(self):
        a = self.jittered(self.pick())
        lo, hi = self.choice(((-0.5, 0.5), (None, 0.3), (-0.2, None), (-1, 1)))
        self.kinks.append(Kink("bounds", (a.name,), (lo, hi)))
        form = self.choice(("{a}.clamp({lo}, {hi})", "{a}.clip(min={lo}, max={hi})", "tg.clamp({a}, {lo}, {hi})"))
        self._unary(a, form.replace("{lo}", str(lo)).replace("{hi}", str(hi)))

    @op("Cast")
    def op_cast(self):
        # a round trip through float64 and back: a no-op cast in float64 programs, exact in float32
        self._unary(self.pick(), self.choice(("{a}.to(WIDE).to(DT)", "{a}.double().astype(DT)")))

    @op("Mul")
    def op_dropout(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        p = self.choice((0.25, 0.5, 0.0))
        seed = self.integer(0, 99)
        if self.flip():
            # seeded inside the program so every run (both backends, every finite difference) drops the same
            self.emit(f"F.dropout({at}, {p})", a.shape, ab / (1 - p))
            self.body[-1] = f"tg.manual_seed({seed}); {self.body[-1]}"
        else:
            self.emit(f"F.dropout({at}, {p}, training=False)", a.shape, ab)

    # ------------------------------------------------------------------ matmul
    @op("MatMul")
    def op_matmul(self):
        a = self.pick(lambda n: len(n.shape) >= 1)
        if a is None:
            return False
        at, ab = self.use(a)
        if self.flip() and self.flip():  # a fresh operand on the left: only the right one needs a gradient
            k = a.shape[-2] if len(a.shape) > 1 else a.shape[0]
            shape = (k,) if self.flip() else (self.integer(1, 4), k)
            lt, lb = self.operand(shape)
            out = _matmul_shape(shape, a.shape)
            if out is None:
                return False
            self.emit(f"{lt} @ {at}", out, k * lb * ab)
            return
        k = a.shape[-1]
        how = self.choice(("fresh", "node", "self"))
        b = None
        if how == "self":
            if len(a.shape) == 1:
                b = a
                bt, bb = at, ab
            else:
                bt, bb = f"{at}.transpose(-1, -2)", ab
                b = Node(bt, a.shape[:-2] + (a.shape[-1], a.shape[-2]), ab)
        elif how == "node":
            b = self.pick(lambda n: len(n.shape) >= 1 and n.shape[-2 if len(n.shape) > 1 else 0] == k
                          and _matmul_shape(a.shape, n.shape) is not None)
            if b is not None:
                bt, bb = self.use(b)
        if b is None:
            kind = self.choice(("matrix", "vector", "batched"))
            m = self.integer(1, 4)
            if kind == "vector":
                shape = (k,)
            elif kind == "matrix":
                shape = (k, m)
            else:
                batch = self.partner_shape(a.shape[:-2]) if len(a.shape) > 2 else (self.integer(1, 3),)
                shape = tuple(batch)[len(batch) - (MAX_NDIM - 2):] + (k, m)  # the tail still broadcasts
            if math.prod(shape) > MAX_NUMEL:
                return False
            bt, bb = self.operand(shape)
            b = Node(bt, shape, bb)
        shape = _matmul_shape(a.shape, b.shape)
        if shape is None:
            return False
        form = self.choice(("{a} @ {b}", "{a}.matmul({b})", "tg.matmul({a}, {b})"))
        self.emit(form.format(a=at, b=bt), shape, k * ab * bb)

    @op("Linear", "Reshape")
    def op_linear(self):
        x = self.pick(lambda n: len(n.shape) >= 1)
        if x is None:
            return False
        xt, xb = self.use(x)
        n_out = self.integer(1, 4)
        out_shape = x.shape[:-1] + (n_out,)
        if math.prod(out_shape) > MAX_NUMEL:
            return False
        w = self.pick(lambda n: n.shape == (n_out, x.shape[-1]))
        wt, wb = self.use(w) if w is not None and self.flip() else self.operand((n_out, x.shape[-1]))
        bias = ""
        if self.flip():
            bt, bb = self.operand((n_out,))
            bias = f", {bt}"
        self.emit(f"F.linear({xt}, {wt}{bias})", out_shape, x.shape[-1] * xb * wb + (1 if bias else 0) * 2)

    # ------------------------------------------------------------------ reductions
    def _reduce_call(self, method, dim, keepdim, extra="", numpy_style=True):
        """`method(...)` spelled one of PyTorch's ways (dim=, keepdim=; positional) or numpy's
        (axis=, keepdims=), with `extra` keyword arguments appended."""
        styles = ("torch", "positional", "numpy") if numpy_style else ("torch", "positional")
        style = self.choice(styles)
        if dim is None and not keepdim and self.flip():
            args = []
        elif style == "numpy":
            args = [f"axis={dim}", f"keepdims={keepdim}"]
        elif style == "positional":
            args = [str(dim), str(keepdim)]
        else:
            args = [f"dim={dim}", f"keepdim={keepdim}"]
        return f"{method}({', '.join(args + ([extra] if extra else []))})"

    @op("Sum")
    def op_sum(self):
        a = self.pick()
        at, ab = self.use(a)
        dim, axes = self.dims(a.shape)
        keepdim = self.flip()
        n = math.prod(a.shape[d] for d in axes)
        self.emit(f"{at}.{self._reduce_call('sum', dim, keepdim)}", _reduced(a.shape, axes, keepdim), n * ab)

    @op("Mean")
    def op_mean(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        dim, axes = self.dims(a.shape)
        keepdim = self.flip()
        self.emit(f"{at}.{self._reduce_call('mean', dim, keepdim)}", _reduced(a.shape, axes, keepdim), ab)

    @op("Var")
    def op_var(self):
        a = self.pick()
        at, ab = self.use(a)
        dim, axes = self.dims(a.shape)
        n = math.prod(a.shape[d] for d in axes)
        correction = self.choice((1, 0)) if n > 1 else 0
        keepdim = self.flip()
        call = self._reduce_call("var", dim, keepdim, f"correction={correction}")
        self.emit(f"{at}.{call}", _reduced(a.shape, axes, keepdim), 4 * ab * ab)

    @op("Var", "Sqrt", "Add")
    def op_std(self):
        a = self.pick(lambda n: math.prod(n.shape) >= 2)
        if a is None:
            return False
        dim, axes = self.dims(a.shape)
        if math.prod(a.shape[d] for d in axes) < 2:
            return False
        a = self.jittered(a)
        correction = self.choice((1, 0))
        keepdim = self.flip()
        self.kinks.append(Kink("variance", (a.name,), (axes, correction)))
        self.emit(f"{a.name}.std({dim}, {keepdim}, correction={correction})", _reduced(a.shape, axes, keepdim),
                  2 * a.bound)

    @op("LogSumExp")
    def op_logsumexp(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        dim, axes = self.dims(a.shape)
        keepdim = self.flip()
        n = math.prod(a.shape[d] for d in axes)
        self.emit(f"{at}.{self._reduce_call('logsumexp', dim, keepdim)}", _reduced(a.shape, axes, keepdim),
                  ab + math.log(n))

    @op("Max", "Min", "Add")
    def op_max(self):
        a = self.jittered(self.pick())
        method = self.choice(("max", "min", "amax", "amin"))
        dim, axes = self.dims(a.shape, allow_tuple=method.startswith("a") or self.flip())
        keepdim = self.flip()
        self.kinks.append(Kink("top2", (a.name,), axes))
        # amax/amin take PyTorch's spelling only
        call = f"{a.name}.{self._reduce_call(method, dim, keepdim, numpy_style=method in ('max', 'min'))}"
        if method in ("max", "min") and isinstance(dim, int):
            call += self.choice((".values", "[0]"))  # an int dim gives (values, indices), as in PyTorch
        self.emit(call, _reduced(a.shape, axes, keepdim), a.bound)

    # ------------------------------------------------------------------ movement
    @op("Reshape")
    def op_reshape(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        factors = list(self.draw(st.permutations(_prime_factors(math.prod(a.shape)))))
        cuts = sorted(self.draw(st.lists(st.integers(1, max(len(factors) - 1, 1)), max_size=MAX_NDIM - 1,
                                         unique=True))) if len(factors) > 1 else []
        groups = [factors[i:j] for i, j in zip([0] + cuts, cuts + [len(factors)])]
        target = [math.prod(g) for g in groups if g] if factors else []
        while len(target) < MAX_NDIM and self.flip():
            target.insert(self.integer(0, len(target)), 1)
        shape = tuple(target)
        if target and self.flip():
            target[self.integer(0, len(target) - 1)] = -1
        method = self.choice(("reshape", "view"))
        args = str(tuple(target)) if self.flip() else ", ".join(map(str, target))
        self.emit(f"{at}.{method}({args})", shape, ab)

    @op("Reshape")
    def op_flatten(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        nd = max(len(a.shape), 1)
        s, e = sorted((self.integer(0, nd - 1), self.integer(0, nd - 1)))
        if not a.shape:
            shape = (1,)
        else:
            shape = a.shape[:s] + (math.prod(a.shape[s:e + 1]),) + a.shape[e + 1:]
        self.emit(f"{at}.flatten({self.choice((s, s - nd))}, {self.choice((e, e - nd))})", shape, ab)

    @op("Permute")
    def op_permute(self):
        a = self.pick(lambda n: len(n.shape) >= 1)
        if a is None:
            return False
        at, ab = self.use(a, limit=math.inf)
        nd = len(a.shape)
        form = self.choice(("permute", "transpose", "T", "transpose()"))
        if form == "permute":
            perm = self.draw(st.permutations(range(nd)))
            self.emit(f"{at}.permute({', '.join(str(self.choice((d, d - nd))) for d in perm)})",
                      tuple(a.shape[d] for d in perm), ab)
        elif form == "transpose" or (form == "transpose()" and nd < 2):
            d0, d1 = self.integer(-nd, nd - 1), self.integer(-nd, nd - 1)
            shape = list(a.shape)
            shape[d0], shape[d1] = shape[d1], shape[d0]
            self.emit(f"{at}.transpose({d0}, {d1})", shape, ab)
        elif form == "T":
            self.emit(f"{at}.T", a.shape[::-1], ab)
        else:
            self.emit(f"{at}.transpose()", a.shape[:-2] + (a.shape[-1], a.shape[-2]), ab)

    @op("Expand")
    def op_expand(self):
        a = self.pick(lambda n: 1 in n.shape or len(n.shape) < MAX_NDIM)
        if a is None:
            return False
        at, ab = self.use(a, limit=math.inf)
        lead = [self.integer(1, 3) for _ in range(self.integer(0, MAX_NDIM - len(a.shape)))]
        kept = [self.integer(1, 3) if n == 1 else self.choice((n, -1)) for n in a.shape]
        shape = tuple(lead) + tuple(n if k == -1 else k for n, k in zip(a.shape, kept))
        if math.prod(shape) > MAX_NUMEL:
            return False
        if self.flip():
            self.emit(f"{at}.expand({', '.join(map(str, lead + kept))})", shape, ab)
        else:
            self.emit(f"{at}.broadcast_to({shape})", shape, ab)

    @op("Reshape")
    def op_squeeze(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        nd = len(a.shape)
        if self.flip() or not nd:
            if nd < MAX_NDIM:
                d = self.integer(-nd - 1, nd)
                pos = d % (nd + 1)
                self.emit(f"{at}.unsqueeze({d})", a.shape[:pos] + (1,) + a.shape[pos:], ab)
                return
            return False
        dim, axes = self.dims(a.shape)
        shape = tuple(n for i, n in enumerate(a.shape) if not (i in axes and n == 1))
        self.emit(f"{at}.squeeze()" if dim is None else f"{at}.squeeze({dim})", shape, ab)

    @op("GetItem")
    def op_getitem_basic(self):
        a = self.pick()
        index = self.draw(hnp.basic_indices(a.shape, min_dims=0, max_dims=MAX_NDIM, allow_newaxis=True,
                                            allow_ellipsis=True))
        shape = np.zeros(a.shape)[index].shape
        if math.prod(shape) == 0:
            return False
        at, ab = self.use(a, limit=math.inf)
        items = index if isinstance(index, tuple) else (index,)
        text = ", ".join(_index_fmt(i) for i in items) if items else "()"
        self.emit(f"{at}[{text}]", shape, ab)

    @op("GetItem")
    def op_getitem_array(self):
        a = self.pick(lambda n: len(n.shape) >= 1)
        if a is None:
            return False
        result = hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=5)
        kind = self.choice(("all_dims", "after_slice", "before_ellipsis", "list", "tensor", "mask"))
        n0 = a.shape[0]
        first = self.draw(hnp.arrays(np.int64, self.draw(result), elements=st.integers(-n0, n0 - 1)))
        if kind == "after_slice" and len(a.shape) >= 2:
            n1 = a.shape[1]
            second = self.draw(hnp.arrays(np.int64, self.draw(result), elements=st.integers(-n1, n1 - 1)))
            index, text = (slice(None), second), f":, {_index_fmt(second)}"
        elif kind == "before_ellipsis":
            index, text = (first, Ellipsis), f"{_index_fmt(first)}, ..."
        elif kind == "list":
            lst = np.atleast_1d(first)
            index, text = lst, _fmt(lst)
        elif kind == "tensor":
            index, text = first, f"tg.Tensor({_index_fmt(first)})"
        elif kind == "mask":
            k = self.integer(1, len(a.shape))
            index = self.draw(hnp.arrays(np.bool_, a.shape[:k]))
            text = _index_fmt(index)
        else:
            index = self.draw(hnp.integer_array_indices(a.shape, result_shape=result))
            text = ", ".join(_index_fmt(i) for i in index)
        shape = np.zeros(a.shape)[index].shape
        if not 0 < math.prod(shape) <= MAX_NUMEL or len(shape) > MAX_NDIM:
            return False
        at, ab = self.use(a, limit=math.inf)
        self.emit(f"{at}[{text}]", shape, ab)

    @op("Cat")
    def op_cat(self):
        a = self.pick(lambda n: len(n.shape) >= 1)
        if a is None:
            return False
        nd = len(a.shape)
        d = self.integer(0, nd - 1)

        def fits(n):
            return len(n.shape) == nd and all(x == y for i, (x, y) in enumerate(zip(n.shape, a.shape)) if i != d)

        pieces, total, bound = [self.use(a, limit=math.inf)[0]], a.shape[d], a.bound
        for _ in range(self.integer(1, 3)):
            how = self.choice(("self", "node", "fresh"))
            other = a if how == "self" else self.pick(fits) if how == "node" else None
            if other is not None:
                text, b = self.use(other, limit=math.inf)
                size = other.shape[d]
            else:
                size = self.integer(1, 3)
                text, b = self.operand(a.shape[:d] + (size,) + a.shape[d + 1:])
            pieces.append(text)
            total, bound = total + size, max(bound, b)
        shape = a.shape[:d] + (total,) + a.shape[d + 1:]
        if math.prod(shape) > MAX_NUMEL:
            return False
        form = self.choice(("tg.cat([{p}], dim={d})", "tg.cat(({p},), {d})", "tg.concatenate([{p}], {d})"))
        self.emit(form.format(p=", ".join(pieces), d=self.choice((d, d - nd))), shape, bound)

    @op("Stack")
    def op_stack(self):
        a = self.pick(lambda n: len(n.shape) < MAX_NDIM)
        if a is None:
            return False
        pieces, bound = [self.use(a, limit=math.inf)[0]], a.bound
        for _ in range(self.integer(0, 2)):
            how = self.choice(("self", "node", "fresh"))
            other = a if how == "self" else self.pick(lambda n: n.shape == a.shape) if how == "node" else None
            text, b = self.use(other, limit=math.inf) if other is not None else self.operand(a.shape)
            pieces.append(text)
            bound = max(bound, b)
        nd = len(a.shape) + 1
        d = self.integer(-nd, nd - 1)
        shape = a.shape[:d % nd] + (len(pieces),) + a.shape[d % nd:]
        if math.prod(shape) > MAX_NUMEL:
            return False
        self.emit(f"tg.stack([{', '.join(pieces)}], dim={d})", shape, bound)

    @op("GetItem")
    def op_split(self):
        a = self.pick(lambda n: len(n.shape) >= 1)
        if a is None:
            return False
        nd = len(a.shape)
        d = self.integer(0, nd - 1)
        n = a.shape[d]
        kind = self.choice(("size", "sections", "chunk"))
        if kind == "size":
            k = self.integer(1, n + 1)
            sizes = [min(k, n - i) for i in range(0, n, k)]
            call = f"split({k}, dim={self.choice((d, d - nd))})"
        elif kind == "chunk":
            chunks = self.integer(1, n + 1)
            step = -(-n // chunks)
            sizes = [min(step, n - i) for i in range(0, n, step)]
            call = f"chunk({chunks}, {self.choice((d, d - nd))})"
        else:
            cuts = sorted(self.draw(st.lists(st.integers(1, n - 1), max_size=3, unique=True))) if n > 1 else []
            sizes = [j - i for i, j in zip([0] + cuts, cuts + [n])]
            call = f"split({sizes}, {self.choice((d, d - nd))})"
        at, ab = self.use(a, limit=math.inf)
        self.emit_many(f"{at}.{call}", [a.shape[:d] + (s,) + a.shape[d + 1:] for s in sizes], ab)

    # ------------------------------------------------------------------ nn
    @op("Softmax", "LogSoftmax")
    def op_softmax(self):
        a = self.pick()
        at, ab = self.use(a, limit=math.inf)
        nd = len(a.shape)
        d = self.integer(-max(nd, 1), max(nd, 1) - 1)
        n = a.shape[d] if nd else 1
        fn = self.choice(("softmax", "log_softmax"))
        form = self.choice(("{a}.{f}({d})", "F.{f}({a}, dim={d})", "tg.{f}({a}, {d})"))
        self.emit(form.format(a=at, f=fn, d=d), a.shape, 1 if fn == "softmax" else 2 * ab + math.log(n))

    def _targets(self, logits_shape, class_dim, reduction):
        """Integer targets for (logits, class_dim), an ignore_index, and the reduction to use
        (a mean over no counted targets is 0/0, so it becomes a sum then)."""
        C = logits_shape[class_dim]
        tshape = logits_shape[:class_dim] + logits_shape[class_dim + 1:]
        ignore = self.choice((-100,) + tuple(range(C)))
        targets = self.draw(hnp.arrays(np.int64, tshape, elements=st.integers(0, C - 1)))
        if ignore != -100 and (targets == ignore).all() and reduction == "mean":
            reduction = "sum"
        return targets, ignore, reduction

    @op("CrossEntropy")
    def op_cross_entropy(self):
        a = self.pick(lambda n: len(n.shape) >= 1)
        if a is None:
            return False
        at, ab = self.use(a, limit=math.inf)
        cd = 0 if len(a.shape) == 1 else 1
        targets, ignore, reduction = self._targets(a.shape, cd, self.choice(("mean", "sum", "none")))
        t = f"np.array({_fmt(targets)})"
        if self.flip():
            t = f"tg.Tensor({t})"
        shape = targets.shape if reduction == "none" else ()
        bound = (2 * ab + math.log(a.shape[cd])) * (max(targets.size, 1) if reduction == "sum" else 1)
        self.emit(f"F.cross_entropy({at}, {t}, reduction={reduction!r}, ignore_index={ignore})", shape, bound)

    @op("GetItem", "Mul", "Sum")
    def op_nll_loss(self):
        a = self.pick(lambda n: 1 <= len(n.shape) <= 3)
        if a is None:
            return False
        at, ab = self.use(a, limit=math.inf)
        cd = 0 if len(a.shape) == 1 else 1
        targets, ignore, reduction = self._targets(a.shape, cd, self.choice(("mean", "sum", "none")))
        shape = targets.shape if reduction == "none" else ()
        bound = ab * (max(targets.size, 1) if reduction == "sum" else 1)
        self.emit(f"F.nll_loss({at}, np.array({_fmt(targets)}), ignore_index={ignore}, reduction={reduction!r})",
                  shape, bound)

    @op("Sub", "Mul")
    def op_mse_loss(self):
        a = self.pick()
        at, ab = self.use(a)
        how = self.choice(("fresh", "node", "self"))
        b = a if how == "self" else self.pick(lambda n: n.shape == a.shape and n is not a) if how == "node" else None
        bt, bb = self.use(b) if b is not None else self.operand(a.shape)
        reduction = self.choice(("mean", "sum", "none"))
        shape = a.shape if reduction == "none" else ()
        bound = (ab + bb) ** 2 * (math.prod(a.shape) if reduction == "sum" else 1)
        if self.flip():
            at, bt = bt, at  # the node as the target
        self.emit(f"F.mse_loss({at}, {bt}, reduction={reduction!r})", shape, bound)

    @op("Embedding")
    def op_embedding(self):
        w = self.pick(lambda n: len(n.shape) == 2) if self.flip() else None
        if w is not None:
            wt, wb = self.use(w, limit=math.inf)
            num, dim = w.shape
        else:  # a new leaf: with a constant weight the result would not require grad
            num, dim = self.integer(1, 4), self.integer(1, 4)
            if num * dim > self.leaf_budget:
                return False
            w = self.leaf((num, dim))
            wt, wb = self.use(w, limit=math.inf)
        idx = self.draw(hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4),
                                   elements=st.integers(0, num - 1)))
        shape = idx.shape + (dim,)
        if math.prod(shape) > MAX_NUMEL:
            return False
        self.emit(f"F.embedding(np.array({_fmt(idx)}), {wt})", shape, wb)

    @op("RNNCellStep")
    def op_rnn_step(self):
        """1-3 fused Elman steps h = act(x W_ih^T + h W_hh^T + b_ih + b_hh), sharing weights as
        an unrolled RNN does (the engine sums a shared weight's per-step gradients in one GEMM)."""
        drawn = self.step_shapes(max_hidden=4, states=1)
        if drawn is None:
            return False
        x, B, I, H = drawn

        act = self.choice(("tanh", "relu", "sigmoid"))
        # tanh and sigmoid saturate on big inputs; relu's kink check needs every operand by name
        limit = math.inf if act == "relu" else 1.0

        def tensor(shape):
            return self.node_or_operand(shape, limit)

        h, hb = tensor((B, H))
        (w_ih, wib), (w_hh, whb) = tensor((H, I)), tensor((H, H))
        b_ih = b_hh = None
        if act == "relu" or self.flip():
            b_ih = tensor((H,))[0]
            # relu gets a jittered bias, so zero inputs do not put every unit on its kink
            b_hh = self.jitter((H,)) if act == "relu" else tensor((H,))[0]
        for _ in range(self.integer(1, 3)):
            xt, xb, one_hot = self.step_input(x, limit)
            if act == "relu":
                x_name = xt if one_hot is None else None
                self.kinks.append(Kink("rnn_relu", (x_name, h, w_ih, w_hh, b_ih, b_hh), one_hot))
            bound = 1 if act != "relu" else I * xb * wib + H * hb * whb + 3
            step = self.emit(f"RNNCellStep.apply({xt}, {h}, {w_ih}, {w_hh}, {b_ih}, {b_hh}, nonlinearity={act!r})",
                             (B, H), bound)
            h, hb = self.use(step, limit)
            if self.flip():  # the next step reads another input of the same shape, if there is one
                x = self.pick(lambda n: n.shape == (B, I)) or x

    def step_shapes(self, max_hidden, states):
        """(x, B, I, H) for 1-3 recurrent steps: a 2-D node x (B, I) they read and a hidden size
        H <= max_hidden; None when there is no 2-D node or `states` (B, H) arrays are too big."""
        x = self.pick(lambda n: len(n.shape) == 2)
        if x is None:
            return None
        (B, I), H = x.shape, self.integer(1, max_hidden)
        return None if states * B * H > MAX_NUMEL else (x, B, I, H)

    def step_input(self, x, limit):
        """(text, bound, one-hot rows or None) of a recurrent step's input: node x, or half the
        time token ids (B,) standing for one-hot rows of x's width (the step gathers W_ih's
        columns; the relu kink check multiplies the one-hot rows, passed as the Kink's arg)."""
        B, I = x.shape
        if self.flip():
            ids = self.draw(hnp.arrays(np.int64, B, elements=st.integers(0, I - 1)))
            return f"np.array({_fmt(ids)})", 1.0, np.eye(I)[ids]
        return (*self.use(x, limit), None)

    def gate_weights(self, gates, I, H):
        """Texts of w_ih (gates*H, I), w_hh (gates*H, H) and, half the time, the two biases
        (else None), squashed into [-1, 1]: the gates saturate on big inputs."""
        w_ih, w_hh = self.node_or_operand((gates * H, I), 1.0)[0], self.node_or_operand((gates * H, H), 1.0)[0]
        if not self.flip():
            return w_ih, w_hh, None, None
        return w_ih, w_hh, self.node_or_operand((gates * H,), 1.0)[0], self.node_or_operand((gates * H,), 1.0)[0]

    @op("LSTMCellStep", "GetItem")
    def op_lstm_step(self):
        """1-3 fused LSTM steps sharing weights; each returns h' and c' stacked, read back by
        indexing (the cell's own `hc[0], hc[1]`)."""
        drawn = self.step_shapes(max_hidden=3, states=2)
        if drawn is None:
            return False
        x, B, I, H = drawn
        (h, _), (c, cb) = self.node_or_operand((B, H), 1.0), self.node_or_operand((B, H), 1.0)
        w_ih, w_hh, b_ih, b_hh = self.gate_weights(4, I, H)
        for _ in range(self.integer(1, 3)):
            xt = self.step_input(x, 1.0)[0]
            hc = self.emit(f"LSTMCellStep.apply({xt}, {h}, {c}, {w_ih}, {w_hh}, {b_ih}, {b_hh})", (2, B, H), cb + 1)
            cb += 1  # |c'| <= |c| + 1, |h'| <= 1
            h = self.emit(f"{hc.name}[0]", (B, H), 1).name
            c = self.emit(f"{hc.name}[1]", (B, H), cb).name

    @op("GRUCellStep")
    def op_gru_step(self):
        """1-3 fused GRU steps sharing weights; h' is a convex mix of h and tanh(...)."""
        drawn = self.step_shapes(max_hidden=3, states=1)
        if drawn is None:
            return False
        x, B, I, H = drawn
        h, hb = self.node_or_operand((B, H), 1.0)
        w_ih, w_hh, b_ih, b_hh = self.gate_weights(3, I, H)
        for _ in range(self.integer(1, 3)):
            xt = self.step_input(x, 1.0)[0]
            hb = max(hb, 1.0)  # |h'| <= max(|h|, 1)
            h = self.emit(f"GRUCellStep.apply({xt}, {h}, {w_ih}, {w_hh}, {b_ih}, {b_hh})", (B, H), hb).name


def _matmul_shape(a, b):
    """numpy's `@` result shape, or None when the operands do not fit (or grow too big)."""
    if not a or not b or a[-1] != b[-2 if len(b) > 1 else 0]:
        return None
    try:
        out = np.matmul(np.zeros(a), np.zeros(b)).shape
    except ValueError:
        return None
    return out if math.prod(out) <= MAX_NUMEL and len(out) <= MAX_NDIM else None


@st.composite
def programs(draw, min_ops=1, max_ops=200, ops=None, max_leaf_elements=40):
    """A random `Program` of min_ops..max_ops ops from `ops` (default: every op in OPS).

    With the defaults, three programs in four have 24 ops or more and the median is about 80
    (hypothesis's choice budget cuts some long ones short); the floor is 1 so that hypothesis
    can shrink a failing program down to the op that breaks.

    `max_leaf_elements` caps the total size of the leaves: gradcheck's finite differences cost
    two forward passes per leaf element."""
    names = tuple(OPS) if ops is None else tuple(ops)
    n_ops = draw(st.integers(min_ops, max_ops))
    return _Builder(draw, names, max_leaf_elements).build(n_ops)
