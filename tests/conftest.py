"""Hypothesis profiles: "ci" (default) keeps the suite to well under two minutes on two cores;
`HYPOTHESIS_PROFILE=soak` runs many more examples per test for a slow, thorough search."""
import os

from hypothesis import HealthCheck, settings

# The backend fixture is function-scoped on purpose: it only flips a global switch, which is
# the same for every example of a test, so re-running it per example would change nothing.
_suppress = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
             HealthCheck.data_too_large]

settings.register_profile("ci", deadline=None, max_examples=40, suppress_health_check=_suppress,
                          print_blob=True)
settings.register_profile("soak", deadline=None, max_examples=1000,
                          suppress_health_check=_suppress, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
