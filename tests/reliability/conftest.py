"""Hypothesis profiles for the reliability tests.

``ci`` (the default) keeps the property tests to a few dozen examples each so
the suite stays quick; ``slow`` explores far more. Choose one with
CAREFLOW_HYPOTHESIS_PROFILE (docs/reliability.md)::

    CAREFLOW_HYPOTHESIS_PROFILE=slow .venv/bin/python -m pytest tests/reliability/test_properties.py

Every example talks to a real database, so there is no per-example deadline,
and the function-scoped ``engine`` fixture is shared by the examples on
purpose (each example empties the tables it uses first).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    "print_blob": True,
}

settings.register_profile("ci", max_examples=20, **_COMMON)
settings.register_profile("slow", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("CAREFLOW_HYPOTHESIS_PROFILE", "ci"))

