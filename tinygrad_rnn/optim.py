"""Optimizers and learning-rate schedules with PyTorch's names, defaults and formulas.

`step()` reads each parameter's `.grad` and updates `p.data` and the per-parameter state
arrays in place, one fused kernel call per parameter (`kernels/optim.py`). The state lives
in `optimizer.state[p]` under PyTorch's key names, and `state_dict()` / `load_state_dict()`
round-trip it exactly, so a resumed run continues with bit-identical updates.
"""
from __future__ import annotations

import math
import sys
import types

import numpy as np

from .autograd import enable_grad, no_grad
from .kernels import K
from .tensor import Tensor


class Optimizer:
    """Holds `param_groups` (dicts of params plus hyperparameters) and per-parameter `state`."""

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state = {}
        self.param_groups = []
        groups = [params] if isinstance(params, Tensor) else list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf or not p.requires_grad:
                raise ValueError("can't optimize a non-leaf Tensor or one that does not require grad")
            if id(p) in taken:
                raise ValueError("some parameters appear in more than one parameter group")
            taken.add(id(p))
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data[...] = 0

    @no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient. `closure` (optional) recomputes
        the loss and its gradients first and its result is returned, as in PyTorch."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state.setdefault(p, {})
                    self._update(p.data, p.grad.data, state, group)
                    p._mark_modified()
        return loss

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict, group: dict) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """{'state': {index: {name: array or int}}, 'param_groups': [...]}, parameters replaced
        by their position in the groups, as in PyTorch. Arrays are copies (a snapshot)."""
        index, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}
                 for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("loaded state dict has parameter groups that don't match the size of "
                             "the optimizer's groups")
        params = {i: p for s, g in zip(saved, self.param_groups) for i, p in zip(s["params"], g["params"])}
        new_state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            new_state[p] = {}
            for k, v in s.items():
                if isinstance(v, np.ndarray) and v.shape == p.shape:
                    v = np.array(v, dtype=p.dtype, order="C")  # a fresh, contiguous array per param
                elif isinstance(v, np.ndarray):
                    raise ValueError(f"state '{k}' of parameter {i} has shape {v.shape}, the parameter {p.shape}")
                new_state[p][k] = v
        self.state = new_state
        for s, g in zip(saved, self.param_groups):
            g.update({k: v for k, v in s.items() if k != "params"})

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])


def _zeros(p: np.ndarray) -> np.ndarray:
    return np.zeros(p.shape, p.dtype)  # C-contiguous whatever p's layout, as the kernels need


_EMPTY = {}


def _empty(dtype) -> np.ndarray:
    """A placeholder for state an option turns off (the kernel never reads it)."""
    return _EMPTY.setdefault(np.dtype(dtype), np.empty(0, dtype))


class SGD(Optimizer):
    """p -= lr * d, with d = g + weight_decay * p and, when momentum > 0, PyTorch's formula
    buf = momentum * buf + (1 - dampening) * d (buf = d on the first step), d = buf, or
    d = d + momentum * buf with nesterov. (Sutskever et al. scale differently: lr multiplies
    g inside the buffer; the two agree for a constant lr.)"""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"invalid SGD hyperparameters: lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, p, g, state, group):
        first = "momentum_buffer" not in state
        if group["momentum"] != 0 and first:
            state["momentum_buffer"] = _zeros(p)
        buf = state.get("momentum_buffer", _empty(p.dtype))
        K.sgd_step(p, g, buf, group["lr"], group["momentum"], group["dampening"],
                   group["weight_decay"], group["nesterov"], first)


class Adagrad(Optimizer):
    """sum += g^2; p -= lr * g / (sqrt(sum) + eps): the optimizer min-char-rnn uses.

    PyTorch adds eps *outside* the square root (default 1e-10); min-char-rnn writes
    `p -= lr * g / np.sqrt(mem + 1e-8)`, eps *inside*. `eps_inside_sqrt=True, eps=1e-8`
    (not a PyTorch option) reproduces min-char-rnn's numbers exactly; the defaults are
    PyTorch's. The two differ only while sum is tiny, i.e. for the first few updates of a
    weight whose gradient is near zero. `lr_decay` divides lr by 1 + (step - 1) * lr_decay.
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, eps_inside_sqrt: bool = False):
        if lr < 0 or eps < 0 or initial_accumulator_value < 0:
            raise ValueError(f"invalid Adagrad hyperparameters: lr={lr}, eps={eps}, "
                             f"initial_accumulator_value={initial_accumulator_value}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps_inside_sqrt=eps_inside_sqrt))

    def _update(self, p, g, state, group):
        if not state:
            state["step"] = 0
            state["sum"] = np.full(p.shape, group["initial_accumulator_value"], p.dtype)
        state["step"] += 1
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        K.adagrad_step(p, g, state["sum"], clr, group["weight_decay"], group["eps"], group["eps_inside_sqrt"])


class RMSprop(Optimizer):
    """square_avg = alpha * square_avg + (1 - alpha) * g^2; p -= lr * g / (sqrt(square_avg) + eps).

    Karpathy's char-rnn (optim.rmsprop, decay_rate 0.95) is exactly this with alpha=0.95;
    `centered` divides by the estimated variance instead, `momentum` smooths the step.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        if lr < 0 or eps < 0 or momentum < 0 or not 0 <= alpha <= 1:
            raise ValueError(f"invalid RMSprop hyperparameters: lr={lr}, alpha={alpha}, eps={eps}, momentum={momentum}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _update(self, p, g, state, group):
        if not state:
            state["step"] = 0
            state["square_avg"] = _zeros(p)
            if group["momentum"] > 0:
                state["momentum_buffer"] = _zeros(p)
            if group["centered"]:
                state["grad_avg"] = _zeros(p)
        state["step"] += 1
        empty = _empty(p.dtype)
        K.rmsprop_step(p, g, state["square_avg"], state.get("momentum_buffer", empty),
                       state.get("grad_avg", empty), group["lr"], group["alpha"], group["eps"],
                       group["weight_decay"], group["momentum"], group["centered"])


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, PyTorch's formula:
    m += (1 - b1)(g - m); v = b2 v + (1 - b2) g^2; p -= lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps).
    `weight_decay` adds weight_decay * p to g (L2, not AdamW's decoupled decay)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid Adam hyperparameters: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, state, group):
        if not state:
            state["step"] = 0
            state["exp_avg"] = _zeros(p)
            state["exp_avg_sq"] = _zeros(p)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        K.adam_step(p, g, state["exp_avg"], state["exp_avg_sq"], group["lr"], beta1, beta2,
                    group["eps"], group["weight_decay"], state["step"])


# ----------------------------------------------------------------------------- schedules
class LRScheduler:
    """Sets each group's lr from the epoch count; call `step()` once per epoch, after
    `optimizer.step()`. Building one counts as epoch 0 and remembers `initial_lr`."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> list:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)


class StepLR(LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size), applied as PyTorch does: multiply by
    gamma every `step_size` epochs (so an lr changed by hand in between is kept)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        decay = self.last_epoch != 0 and self.last_epoch % self.step_size == 0
        return [g["lr"] * (self.gamma if decay else 1) for g in self.optimizer.param_groups]


class ExponentialLR(LRScheduler):
    """lr = initial_lr * gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        return [g["lr"] * (self.gamma if self.last_epoch != 0 else 1) for g in self.optimizer.param_groups]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2: from initial_lr
    down to eta_min at epoch T_max along half a cosine (and, as in PyTorch, back up after it).
    Computed in this closed form at every step (PyTorch's `step()` updates the previous lr
    recursively, equal up to rounding), so the lr depends on the epoch count alone: a resumed
    run gets the same lrs as an unbroken one."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be at least 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        t = self.last_epoch
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
                for base in self.base_lrs]


# `from tinygrad_rnn.optim.lr_scheduler import StepLR` works as in PyTorch, without a package
lr_scheduler = types.ModuleType(f"{__name__}.lr_scheduler", "Learning-rate schedules (PyTorch's names).")
lr_scheduler.LRScheduler, lr_scheduler.StepLR, lr_scheduler.ExponentialLR = LRScheduler, StepLR, ExponentialLR
lr_scheduler.CosineAnnealingLR = CosineAnnealingLR
sys.modules[lr_scheduler.__name__] = lr_scheduler
