"""Where channel credentials come from: the settings object first, then Prefect.

Every credential is a field of ``careflow.settings.Settings`` and so can be
set as ``CAREFLOW_<FIELD>`` in the environment. When it is not set there and
a Prefect API is reachable, careflow looks in its own credentials blocks
(careflow/channels/blocks.py: ``careflow Twilio``, ``careflow SendGrid``, ``careflow
Sinch fax``, named CAREFLOW_CREDENTIALS_BLOCK, default ``careflow``), then
for a Prefect *Secret* block named ``careflow-<field-with-dashes>``
(``careflow-twilio-auth-token``). The environment always wins, so a
developer can override a deployed secret.

Values are unwrapped here and handed straight to the SDK that needs them;
nothing in this module logs a value, and error messages name only the
setting and the block.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from careflow.errors import ConfigError
from careflow.settings import Settings
from careflow.unsubscribe import UnsubscribeTokens, local_tokens

log = logging.getLogger(__name__)

#: ``loader(block_name) -> value or None``; tests hand in a dict's ``get``.
SecretLoader = Callable[[str], "str | None"]


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (``CAREFLOW_TWILIO_AUTH_TOKEN``)."""
    return f"CAREFLOW_{field.upper()}"


def block_name(field: str) -> str:
    """The Prefect Secret block consulted for ``field`` (``careflow-twilio-auth-token``)."""
    return "careflow-" + field.replace("_", "-")


def prefect_api_available() -> bool:
    """True when talking to Prefect will not start a throw-away local server.

    That is: ``PREFECT_API_URL`` is configured, or we are inside a flow or
    task run (which already has a server). Outside those, asking Prefect for
    a block or a concurrency slot would boot an ephemeral server (~20 s) only
    to find nothing there, so callers skip Prefect instead.
    """
    if os.environ.get("PREFECT_API_URL"):
        return True
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.settings import get_current_settings

        if get_current_settings().api.url:
            return True
        return FlowRunContext.get() is not None or TaskRunContext.get() is not None
    # An unusable Prefect install must not break delivery set-up.
    except Exception:
        return False


def load_prefect_secret(name: str) -> str | None:
    """Value of the Prefect Secret block ``name``; None when absent or unreachable."""
    if not prefect_api_available():
        return None
    try:
        from prefect.blocks.system import Secret

        block = Secret.load(name, _sync=True)
    except ValueError:  # Prefect's answer for "no block document with that name"
        return None
    # API down: fall through to the "missing" error, which names the setting.
    except Exception as exc:
        log.warning("could not read Prefect Secret block %r: %s", name, type(exc).__name__)
        return None
    value = block.get()
    return value if isinstance(value, str) else None


def load_careflow_block(field: str, name: str) -> str | None:
    """``field`` from careflow's own credentials block ``name`` (careflow/channels/blocks.py)."""
    if not prefect_api_available():
        return None
    from careflow.channels.blocks import FIELDS

    if field not in FIELDS:
        return None
    block_type, attribute = FIELDS[field]
    try:
        block = block_type.load(name, _sync=True)
    except ValueError:  # no such block document (or the type is not registered)
        return None
    except Exception as exc:
        log.warning("could not read Prefect block %r: %s", name, type(exc).__name__)
        return None
    value = getattr(block, attribute, None)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value or None


def credential(
    settings: BaseSettings, field: str, *, loader: SecretLoader | None = None
) -> str | None:
    """The credential ``field`` as plain text, or None when nowhere to be found.

    ``loader`` replaces the Prefect look-up (tests, other secret stores); it
    is only consulted when the settings field is empty and, by default, only
    when ``settings.credentials_from_prefect_blocks`` is on.
    """
    raw = getattr(settings, field)
    if isinstance(raw, SecretStr):
        raw = raw.get_secret_value()
    if raw:
        return str(raw).strip()
    if loader is None:
        if not getattr(settings, "credentials_from_prefect_blocks", True):
            return None
        name = getattr(settings, "credentials_block", "careflow")
        from_block = load_careflow_block(field, name)
        if from_block:
            return from_block.strip()
        loader = load_prefect_secret
    value = loader(block_name(field))
    return value.strip() if value else None


def require(settings: BaseSettings, field: str, *, loader: SecretLoader | None = None) -> str:
    """Like :func:`credential` but raise ConfigError naming the setting when missing."""
    value = credential(settings, field, loader=loader)
    if not value:
        raise _missing(field)
    return value


def _missing(field: str) -> ConfigError:
    return ConfigError(
        f"{env_name(field)} is missing: set it in the environment or create "
        f"the Prefect Secret block {block_name(field)!r}"
    )


def unsubscribe_tokens(
    settings: Settings, *, local: bool = False, loader: SecretLoader | None = None
) -> UnsubscribeTokens:
    """The unsubscribe key every sender signs with and ``careflow serve`` verifies with.

    The one place it is looked up: CAREFLOW_UNSUBSCRIBE_SECRET, careflow's
    SendGrid block, the Prefect Secret block ``careflow-unsubscribe-secret``;
    with none of them and ``local`` (the outbox, ``careflow serve --local``),
    the key this machine keeps in CAREFLOW_HOME. Missing otherwise, short or
    guessable: ConfigError naming the setting.
    """
    key = credential(settings, "unsubscribe_secret", loader=loader)
    if key:
        return UnsubscribeTokens.from_settings(settings, key)
    if local:
        return local_tokens(settings)
    raise _missing("unsubscribe_secret")
