"""Hypothesis profiles: "ci" (default) keeps the suite to well under two minutes on two cores;
`HYPOTHESIS_PROFILE=soak` runs many more examples per test for a slow, thorough search.

Every health check is on but one: `function_scoped_fixture`. The property tests that take a
function-scoped fixture take one that only sets a global switch for the whole test and undoes
it afterwards (test_ops.py's `backend`, test_rnn.py's `rnn_step_path`, the `mode` below, and
`monkeypatch`, which each example sets to the same value), so that it is not re-run per example
changes nothing.
"""
import os
import signal

import pytest
from hypothesis import HealthCheck, settings

_suppress = [HealthCheck.function_scoped_fixture]

settings.register_profile("ci", deadline=None, max_examples=40, suppress_health_check=_suppress,
                          print_blob=True)
settings.register_profile("soak", deadline=None, max_examples=1000,
                          suppress_health_check=_suppress, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# `mode`: run a test on the fast path and on the plain, textbook one (tests/modes.py)
from modes import mode  # noqa: E402,F401


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_works():
    """Tests press Ctrl-C themselves (SIGINT to this process or to a child). A shell without job
    control starts a background job (`cmd &`) with SIGINT ignored, and children inherit that:
    training would never see the press and run on for ever. Python's own handler, for the session."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
