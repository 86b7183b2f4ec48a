"""Grad mode and anomaly mode: the two switches every op consults, thread-local like PyTorch's.

`no_grad()` / `enable_grad()` / `set_grad_enabled(mode)` turn graph recording off or on;
`detect_anomaly()` makes the first op whose forward output or backward gradient holds NaN/Inf
raise, naming where the op was created.
"""
from __future__ import annotations

import functools
import os
import threading
import traceback


class _GradMode(threading.local):
    # thread-local like PyTorch's: no_grad() in one thread leaves autograd on in the others
    enabled = True
    anomaly = False


_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _mode.enabled


def is_anomaly_enabled() -> bool:
    return _mode.anomaly


class _Recording:
    """Context manager (and decorator) that switches graph recording to `self.mode` inside."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = []

    def __enter__(self):
        self.prev.append(_mode.enabled)
        _mode.enabled = self.mode

    def __exit__(self, *exc):
        _mode.enabled = self.prev.pop()
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with _Recording(self.mode):
                return func(*args, **kwargs)

        return wrapper


class set_grad_enabled(_Recording):
    """As in PyTorch, also a plain call: `set_grad_enabled(False)` switches recording off until
    switched back on; as a context manager or decorator it switches only inside."""

    def __init__(self, mode: bool):
        super().__init__(mode)
        self.before = _mode.enabled
        _mode.enabled = self.mode

    def __enter__(self):
        self.prev.append(self.before)
        _mode.enabled = self.mode

    def __call__(self, func):
        _mode.enabled = self.before  # a decorator: nothing switches until func runs
        return super().__call__(func)


class no_grad(_Recording):
    """`with no_grad():` or `@no_grad()`: ops inside build no graph."""

    def __init__(self):
        super().__init__(False)


class enable_grad(_Recording):
    def __init__(self):
        super().__init__(True)


class AnomalyError(RuntimeError):
    """An op produced NaN or Inf while `detect_anomaly()` was on."""


class detect_anomaly:
    """Raise at the first op whose forward output or backward gradient holds NaN/Inf.

    Costs one `isfinite` pass per op and a stack capture per op, so use it for debugging only.
    """

    def __enter__(self):
        self.prev = _mode.anomaly
        _mode.anomaly = True

    def __exit__(self, *exc):
        _mode.anomaly = self.prev
        return False


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def user_frame() -> str:
    """The innermost stack frame outside this package: where the user wrote the op."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f'File "{frame.filename}", line {frame.lineno}, in {frame.name}: {frame.line}'
    return "<unknown>"
