"""Fixtures for the channel tests: settings for live channels, loopback servers.

Nothing here reaches the internet: every base URL points at 127.0.0.1.
Rate limits use the in-process bucket (no Prefect server) and timeouts are
short so the fault tests stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from careflow.channels.delivery import RetryPolicy
from careflow.settings import Settings
from tests.providers.fault_server import FaultServer
from tests.providers.kit import live_settings
from tests.providers.prism import (
    SENDGRID_SPEC,
    TWILIO_SPEC,
    PrismServer,
    prism_binary,
    specs_dir,
)


@pytest.fixture
def fast_policy() -> RetryPolicy:
    """Retries without real waiting (Retry-After and backoff still computed)."""
    return RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_max=0.01, max_retry_after=5)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def no_prefect_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Prefect API configured, even after a session-scoped Prefect test harness
    (tests/conftest.py `prefect_api`) pointed this process's settings at its server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@pytest.fixture
def settings_for() -> Callable[..., Settings]:
    return live_settings


def _need_prism() -> tuple[Path, Path]:
    binary, specs = prism_binary(), specs_dir()
    if binary is None:
        # a tool `make test` installs: missing means a broken set-up, not a reason to skip
        pytest.fail("Prism is not installed (`make test` installs it: .ci/install-tools.sh)")
    if specs is None:
        # data from shared/ beside the checkout, not a tool
        why = "provider specs not found (set CAREFLOW_PROVIDER_SPECS)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; required in CI")
        pytest.skip(why)
    return binary, specs


@pytest.fixture(scope="session")
def prism_twilio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrismServer]:
    binary, specs = _need_prism()
    server = PrismServer(binary, specs / TWILIO_SPEC, tmp_path_factory.mktemp("prism") / "twilio.log")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def prism_sendgrid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrismServer]:
    binary, specs = _need_prism()
    server = PrismServer(
        binary, specs / SENDGRID_SPEC, tmp_path_factory.mktemp("prism") / "sendgrid.log"
    )
    yield server.start()
    server.stop()
