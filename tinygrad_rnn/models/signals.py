"""Ctrl-C and SIGTERM during training: a request to stop at the next step boundary."""
from __future__ import annotations

import signal
import threading


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at a step boundary, after the checkpoint was written.

    A KeyboardInterrupt, so a script that does not catch it stops as it would on Ctrl-C, and
    an `except Exception` around train() cannot swallow the user's request to stop."""

    def __init__(self, signum: int, step: int, checkpoint_path: str | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint_path
        if checkpoint_path:
            kept = f"checkpoint {checkpoint_path} holds step {step}; continue with --resume"
        else:
            kept = "nothing was saved: pass --out to keep checkpoints"
        super().__init__(f"{signal.Signals(signum).name}: training stopped after step {step}; {kept}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for death by this signal: 130, 143


class _StopRequests:
    """While active, SIGINT and SIGTERM ask the training loop to stop at the next step boundary.

    The handler only records the signal: a checkpoint written from inside it could catch the
    model half-updated. A second signal raises KeyboardInterrupt at once, for a user who would
    rather lose the unfinished steps than wait; the checkpoint on disk stays intact either way,
    because it is only ever replaced whole. Python runs handlers in the main thread only, so
    elsewhere (train() called from a worker thread) nothing is installed; signals that were
    being ignored (a job started with nohup) stay ignored."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once, without a checkpoint")
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            # None: the previous handler was installed outside Python; the default is the best guess
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        return False
