"""Optimizer updates: each kernel rewrites a parameter and its state arrays in place.

One pass per parameter instead of the five or six temporaries the numpy form allocates.
`p` and the state arrays must be C-contiguous (they are updated through a flat view); the
gradient may have any layout. Scalars arrive as Python floats, so a float32 parameter is
updated in float64 arithmetic and rounded once on store; the numpy references round after
every operation, hence the float32 tolerance in the tests. In float64 both are the same
IEEE operations in the same order. Formulas and state names follow PyTorch's optimizers.
"""
import numpy as np
from numba import njit

from .elementwise import HALF


def _inplace(a):
    if not a.flags.c_contiguous:
        raise ValueError(f"optimizer kernels update in place and need C-contiguous arrays, got "
                         f"strides {a.strides} for shape {a.shape}")
    return a.reshape(-1)


def _read(g):
    return np.ascontiguousarray(g).reshape(-1)


# --- SGD with momentum: buf = m * buf + (1 - dampening) * g (buf = g on the first step);
#     p -= lr * (g + m * buf if nesterov else buf)
def sgd_step_ref(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    d = g + weight_decay * p if weight_decay != 0 else g
    if momentum != 0:
        if first:
            buf[...] = d
        else:
            buf *= momentum
            buf += (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    p -= lr * d


@njit(cache=True)
def _sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    for i in range(p.size):
        d = g[i] + weight_decay * p[i] if weight_decay != 0 else g[i]
        if momentum != 0:
            b = d if first else momentum * buf[i] + (1 - dampening) * d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] -= lr * d


@njit(cache=True)
def _plain_sgd_step(p, g, lr):
    for i in range(p.size):
        p[i] -= lr * g[i]


def sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    if p.dtype is HALF:
        return sgd_step_ref(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first)
    if momentum == 0 and weight_decay == 0:
        # _sgd_step's arithmetic for these options, in a kernel of three arguments: numba's call
        # checks each argument's type, 1.1 -> 0.6 µs a call (a char-RNN updates six parameters)
        _plain_sgd_step(_inplace(p), _read(g), float(lr))
        return
    _sgd_step(_inplace(p), _read(g), _inplace(buf), float(lr), float(momentum), float(dampening),
              float(weight_decay), bool(nesterov), bool(first))


# --- Adagrad: s += g^2; p -= lr * g / (sqrt(s) + eps), or / sqrt(s + eps) as min-char-rnn
def adagrad_step_ref(p, g, s, lr, weight_decay, eps, eps_inside_sqrt):
    d = g + weight_decay * p if weight_decay != 0 else g
    s += d * d
    p += -lr * d / (np.sqrt(s + eps) if eps_inside_sqrt else np.sqrt(s) + eps)


@njit(cache=True)
def _adagrad_step(p, g, s, lr, weight_decay, eps, eps_inside_sqrt):
    for i in range(p.size):
        d = g[i] + weight_decay * p[i] if weight_decay != 0 else g[i]
        m = s[i] + d * d
        s[i] = m
        p[i] += -lr * d / (np.sqrt(m + eps) if eps_inside_sqrt else np.sqrt(m) + eps)


def adagrad_step(p, g, s, lr, weight_decay, eps, eps_inside_sqrt):
    if p.dtype is HALF:
        return adagrad_step_ref(p, g, s, lr, weight_decay, eps, eps_inside_sqrt)
    _adagrad_step(_inplace(p), _read(g), _inplace(s), float(lr), float(weight_decay), float(eps),
                  bool(eps_inside_sqrt))


# --- RMSprop: v = a v + (1 - a) g^2; centered subtracts the squared mean gradient;
#     p -= lr * g / (sqrt(v) + eps), through a momentum buffer when momentum > 0
def rmsprop_step_ref(p, g, v, buf, gavg, lr, alpha, eps, weight_decay, momentum, centered):
    d = g + weight_decay * p if weight_decay != 0 else g
    v *= alpha
    v += (1 - alpha) * d * d
    if centered:
        gavg += (1 - alpha) * (d - gavg)
        avg = np.sqrt(v - gavg * gavg) + eps
    else:
        avg = np.sqrt(v) + eps
    if momentum > 0:
        buf *= momentum
        buf += d / avg
        p -= lr * buf
    else:
        p += -lr * d / avg


@njit(cache=True)
def _rmsprop_step(p, g, v, buf, gavg, lr, alpha, eps, weight_decay, momentum, centered):
    for i in range(p.size):
        d = g[i] + weight_decay * p[i] if weight_decay != 0 else g[i]
        vi = alpha * v[i] + (1 - alpha) * d * d
        v[i] = vi
        if centered:
            a = gavg[i] + (1 - alpha) * (d - gavg[i])
            gavg[i] = a
            vi = vi - a * a
        avg = np.sqrt(vi) + eps
        if momentum > 0:
            b = momentum * buf[i] + d / avg
            buf[i] = b
            p[i] -= lr * b
        else:
            p[i] += -lr * d / avg


def rmsprop_step(p, g, v, buf, gavg, lr, alpha, eps, weight_decay, momentum, centered):
    if p.dtype is HALF:
        return rmsprop_step_ref(p, g, v, buf, gavg, lr, alpha, eps, weight_decay, momentum, centered)
    _rmsprop_step(_inplace(p), _read(g), _inplace(v), _inplace(buf), _inplace(gavg), float(lr),
                  float(alpha), float(eps), float(weight_decay), float(momentum), bool(centered))


# --- Adam: m += (1 - b1)(g - m); v = b2 v + (1 - b2) g^2;
#     p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
def adam_step_ref(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    d = g + weight_decay * p if weight_decay != 0 else g
    m += (1 - beta1) * (d - m)
    v *= beta2
    v += (1 - beta2) * d * d
    denom = np.sqrt(v) / (1 - beta2 ** step) ** 0.5 + eps
    p += -(lr / (1 - beta1 ** step)) * m / denom


@njit(cache=True)
def _adam_step(p, g, m, v, step_size, beta1, beta2, eps, weight_decay, bc2_sqrt):
    for i in range(p.size):
        d = g[i] + weight_decay * p[i] if weight_decay != 0 else g[i]
        mi = m[i] + (1 - beta1) * (d - m[i])
        vi = beta2 * v[i] + (1 - beta2) * d * d
        m[i] = mi
        v[i] = vi
        p[i] += -step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    if p.dtype is HALF:
        return adam_step_ref(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
    # the bias corrections are computed here, in Python, exactly as the reference does
    step_size = lr / (1 - beta1 ** step)
    bc2_sqrt = (1 - beta2 ** step) ** 0.5
    _adam_step(_inplace(p), _read(g), _inplace(m), _inplace(v), float(step_size), float(beta1),
               float(beta2), float(eps), float(weight_decay), float(bc2_sqrt))
