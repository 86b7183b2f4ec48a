"""Vanishing and exploding gradients, measured: ||dL/dh_t|| through time for tanh, relu and
sigmoid RNN cells, with and without clipping.

The loss touches only the last hidden state, with ||dL/dh_T|| = 1, so the curve at k steps
back is the factor by which the gradient has grown or shrunk over k steps of BPTT. Each step
back multiplies it by W_hh^T diag(act'(z_t)); ignoring the activation, k steps give
(W_hh^T)^k, whose norm grows like rho(W_hh)^k (d2l's eigenvalue argument). Here W_hh is
`gain` times a random orthogonal matrix, so rho(W_hh) = ||W_hh^k||^(1/k) = gain exactly, and
the activation's derivative decides the rest: tanh' <= 1, relu' in {0, 1}, sigmoid' <= 1/4.
Clipping caps each dL/dh_t at norm 1 as it flows back: it tames explosion and cannot revive
a vanishing gradient.

    python examples/vanishing_gradients.py            # T=60, H=64; writes vanishing_gradients.png
    python examples/vanishing_gradients.py --quick    # T=20, H=16; the plot goes to the temp dir

Result on this machine (full run: ||dL/dh_0||, 59 steps back from the loss; float64, seed 0;
tests/test_examples.py checks this table against a fresh run):

    cell     gain rho(W_hh) ||W_hh^k||   no clip   clipped
    tanh      0.5     0.500   1.73e-18  4.72e-20  4.72e-20
    tanh      1.0     1.000   1.00e+00  2.90e-04  2.90e-04
    tanh      2.0     2.000   5.76e+17  1.48e+04  1.00e+00
    tanh      4.0     4.000   3.32e+35  1.46e+11  1.00e+00
    relu      0.5     0.500   1.73e-18  2.13e-27  2.13e-27
    relu      1.0     1.000   1.00e+00  3.98e-10  3.98e-10
    relu      2.0     2.000   5.76e+17  3.44e+09  1.00e+00
    relu      4.0     4.000   3.32e+35  3.69e+26  1.00e+00
    sigmoid   0.5     0.500   1.73e-18  9.77e-55  9.77e-55
    sigmoid   1.0     1.000   1.00e+00  7.83e-38  7.83e-38
    sigmoid   2.0     2.000   5.76e+17  6.80e-23  6.80e-23
    sigmoid   4.0     4.000   3.32e+35  3.69e-13  3.69e-13

Read it as: the activations' derivatives only ever shrink the linear bound ||W_hh^k|| (tanh
at gain 4 grows 1e11, not 1e35: saturation); relu at gain 1 still vanishes (about half its
units are off at each step); sigmoid's 1/4 slope makes even gain 4 vanish (4 * 1/4 = 1 at
best). Clipping brings every exploding row back to 1 and leaves every vanishing row as it
was. The --quick run (T=20, H=16) shows the same pattern; both runs take a few seconds.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import nn, viz

ACTIVATIONS = ("tanh", "relu", "sigmoid")
GAINS = (0.5, 1.0, 2.0, 4.0)
CLIP = 1.0


def make_cell(act: str, gain: float, hidden: int, inputs: int, rng) -> nn.RNNCell:
    cell = nn.RNNCell(inputs, hidden, nonlinearity=act).double()
    q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    cell.weight_hh.data[...] = gain * q * np.sign(np.diag(r))  # Haar-random orthogonal, scaled
    return cell


def measure(steps: int, hidden: int, batch: int, inputs: int, seed: int) -> dict:
    """{(act, gain, clipped): norms over t}, plus the cells' ||W_hh^k|| as (gain, "power")."""
    rng = np.random.default_rng(seed)
    tg.manual_seed(seed)
    xs = rng.standard_normal((steps, batch, inputs))
    out = {}
    for act in ACTIVATIONS:
        for gain in GAINS:
            cell = make_cell(act, gain, hidden, inputs, rng)
            for clipped in (False, True):
                out[act, gain, clipped] = viz.grad_norms_through_time(cell, xs, clip=CLIP if clipped else None)
            out[gain, "power"] = viz.power_norms(cell.weight_hh, steps - 1)
            out[gain, "rho"] = viz.spectral_radius(cell.weight_hh)
    return out


def plot(results: dict, steps: int, path: str) -> None:
    fig = viz.new_figure(figsize=(13, 4.2))
    axes = fig.subplots(1, len(ACTIVATIONS), sharey=True)
    back = np.arange(steps)[::-1]  # steps back from the loss, for t = 0..T-1
    colors = dict(zip(GAINS, ("#1b9e77", "#7570b3", "#d95f02", "#e7298a")))
    for ax, act in zip(axes, ACTIVATIONS):
        for gain in GAINS:
            c = colors[gain]
            ax.semilogy(back, np.maximum(results[act, gain, False], 1e-300), color=c, label=f"gain {gain}")
            ax.semilogy(back, np.maximum(results[act, gain, True], 1e-300), color=c, ls="--", lw=1)
            ax.semilogy(np.arange(1, steps), results[gain, "power"], color=c, ls=":", lw=1)
        ax.set_title(f"{act} cell")
        ax.set_xlabel("steps back from the loss")
        ax.set_ylim(1e-30, 1e30)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("||dL/dh_t||")
    axes[0].legend(title="solid: no clip\ndashed: clipped at 1\ndotted: ||W_hh^k||", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(results: dict) -> str:
    lines = [f"{'cell':<8} {'gain':>4} {'rho(W_hh)':>9} {'||W_hh^k||':>10} {'no clip':>9} {'clipped':>9}"]
    for act in ACTIVATIONS:
        for gain in GAINS:
            lines.append(f"{act:<8} {gain:>4} {results[gain, 'rho']:>9.3f} {results[gain, 'power'][-1]:>10.2e} "
                         f"{results[act, gain, False][0]:>9.2e} {results[act, gain, True][0]:>9.2e}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="T=20, H=16, and the plot goes to the temp dir")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="PNG path (default vanishing_gradients.png)")
    args = ap.parse_args(argv)
    steps = args.steps or (20 if args.quick else 60)
    hidden = args.hidden or (16 if args.quick else 64)
    out = args.out or (os.path.join(tempfile.gettempdir(), "vanishing_gradients.png") if args.quick
                       else "vanishing_gradients.png")
    results = measure(steps, hidden, batch=8, inputs=8, seed=args.seed)
    print(f"||dL/dh|| {steps - 1} steps back from the loss (||dL/dh_T|| = 1; hidden {hidden}, batch 8):")
    print(report(results))
    plot(results, steps, out)
    print(f"wrote {out}")
    print("result: " + " ".join(f"{act}_gain{gain:g}_{'clipped' if clipped else 'noclip'}={results[act, gain, clipped][0]:.2e}"
                                for act in ACTIVATIONS for gain in GAINS for clipped in (False, True)))
    return results


if __name__ == "__main__":
    main()
