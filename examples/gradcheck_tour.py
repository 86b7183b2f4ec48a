"""A tour of `tinygrad_rnn.gradcheck`: how to check a gradient, and what a wrong one looks like.

`gradcheck(fn, inputs)` compares the gradients `backward()` computes with central finite
differences, (f(x + eps) - f(x - eps)) / (2 eps), element by element, in float64. It returns
True, or raises `GradcheckError` naming the input, the element, both numbers and how many
elements disagree (`raise_exception=False` returns False instead).

1. A function of your own, composed of framework ops (one GRU-style gated update): passes.
2. A new op written as a `Function` with its own backward, correct: passes.
3. The same op with a classic bug, a missing transpose in the backward of x @ w. With square
   matrices the shapes still fit, so nothing crashes and training would just quietly learn
   worse; gradcheck catches it and says where.
4. float32 inputs are refused: their finite differences are too coarse to tell a bug from
   round-off.

    python examples/gradcheck_tour.py
    python examples/gradcheck_tour.py --quick

Result on this machine (default 6x6 inputs): 1 and 2 pass; 3 fails at input 0, element (0, 1),
analytic -0.6179 against numeric 0.0491, 5 of 36 elements disagree (the broken gradient is
off by up to 5.913); 4 raises TypeError. Under a second of CPU.
"""
from __future__ import annotations

import argparse

import numpy as np

import tinygrad_rnn as tg


def gated_update(x, h, w):
    """h' = z * h + (1 - z) * tanh(x w), with the gate z = sigmoid(x w + h)."""
    pre = x @ w
    z = (pre + h).sigmoid()
    return z * h + (1 - z) * pre.tanh()


class MatMul(tg.Function):
    """x @ w with a hand-written backward: d/dx = g w^T, d/dw = x^T g."""

    def forward(self, x, w):
        self.saved = (x, w)
        return x @ w

    def backward(self, g):
        x, w = self.saved
        return g @ w.T, x.T @ g


class BrokenMatMul(MatMul):
    def backward(self, g):
        x, w = self.saved
        return g @ w, x.T @ g  # bug: w where w^T belongs (the shapes agree when w is square)


def check(fn, inputs) -> tuple[bool, str]:
    """Run gradcheck; (passed, its report)."""
    try:
        tg.gradcheck(fn, inputs)
        return True, "gradcheck passed"
    except tg.GradcheckError as e:
        return False, f"GradcheckError: {e}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=6, help="x is (size, size), w is (size, size)")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (this example is fast anyway)")
    args = ap.parse_args(argv)
    n = 3 if args.quick else args.size
    rng = np.random.default_rng(0)

    def leaf(*shape):
        return tg.Tensor(rng.standard_normal(shape), requires_grad=True)  # float64: numpy's dtype

    x, h, w = leaf(n, n), leaf(n, n), leaf(n, n)
    outcomes = {}
    for label, fn, inputs in [
        ("1. gated_update(x, h, w), composed of framework ops", gated_update, (x, h, w)),
        ("2. MatMul, a Function with a correct backward", MatMul.apply, (x, w)),
        ("3. BrokenMatMul, the backward missing a transpose", BrokenMatMul.apply, (x, w)),
    ]:
        outcomes[label], report = check(fn, inputs)
        print(f"{label}:\n   {report}")

    print("4. the same check on float32 inputs:")
    try:
        tg.gradcheck(MatMul.apply, (x.float().detach().requires_grad_(), w.float().detach().requires_grad_()))
        refused = False
        print("   accepted (unexpected)")
    except TypeError as e:
        refused = True
        print(f"   TypeError: {e}")

    # the broken op is not just a gradcheck artefact: its gradient really differs
    right, wrong = x.detach().requires_grad_(), x.detach().requires_grad_()
    MatMul.apply(right, w.detach()).sum().backward()
    BrokenMatMul.apply(wrong, w.detach()).sum().backward()
    error = float(np.max(np.abs(right.grad.data - wrong.grad.data)))
    print(f"the broken backward's gradient for x is off by up to {error:.3f}")
    passed = [outcomes[k] for k in outcomes]
    print(f"result: composed_passed={passed[0]} function_passed={passed[1]} broken_caught={not passed[2]} "
          f"float32_refused={refused}")


if __name__ == "__main__":
    main()
