"""Credentials: settings first, then Prefect Secret blocks; errors name the setting.

Also ``get_channel``: which channel a name and the delivery mode give.
"""

from __future__ import annotations

import pytest

from careflow.channels import credentials, get_channel
from careflow.channels.credentials import block_name, credential, env_name, require
from careflow.channels.email import SendGridEmail
from careflow.channels.fax import EmailFaxGateway, SinchFax
from careflow.channels.outbox import OutboxChannel
from careflow.channels.sms import TwilioSMS
from careflow.errors import ConfigError
from careflow.settings import Settings
from tests.providers.kit import TWILIO_TOKEN, live_settings, need_cjk_font


def test_names() -> None:
    assert env_name("twilio_auth_token") == "CAREFLOW_TWILIO_AUTH_TOKEN"
    assert block_name("twilio_auth_token") == "careflow-twilio-auth-token"


def test_settings_win_over_blocks() -> None:
    def loader(name: str) -> str:
        raise AssertionError("the block store must not be asked")

    assert credential(live_settings(), "twilio_auth_token", loader=loader) == TWILIO_TOKEN


def test_block_used_when_setting_is_empty() -> None:
    asked: list[str] = []

    def loader(name: str) -> str:
        asked.append(name)
        return " from-block \n"

    settings = live_settings(sendgrid_api_key=None)
    assert credential(settings, "sendgrid_api_key", loader=loader) == "from-block"
    assert asked == ["careflow-sendgrid-api-key"]


def test_missing_names_variable_and_block() -> None:
    with pytest.raises(ConfigError) as raised:
        require(live_settings(sinch_key_secret=None), "sinch_key_secret", loader=lambda n: None)
    assert str(raised.value) == (
        "CAREFLOW_SINCH_KEY_SECRET is missing: set it in the environment or create the "
        "Prefect Secret block 'careflow-sinch-key-secret'"
    )


def test_blocks_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(name: str) -> str:
        raise AssertionError("Prefect must not be asked")

    monkeypatch.setattr(credentials, "load_prefect_secret", boom)
    settings = live_settings(twilio_auth_token=None, credentials_from_prefect_blocks=False)
    assert credential(settings, "twilio_auth_token") is None


def test_no_prefect_api_means_no_block_lookup(monkeypatch: pytest.MonkeyPatch, no_prefect_api: None) -> None:
    assert not credentials.prefect_api_available()
    assert credentials.load_prefect_secret("careflow-twilio-auth-token") is None
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert credentials.prefect_api_available()


def test_channel_takes_secrets_from_a_block_store() -> None:
    store = {"careflow-twilio-auth-token": TWILIO_TOKEN}
    channel = TwilioSMS(live_settings(twilio_auth_token=None), secrets=store.get)
    channel.close()


# --- get_channel -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["outbox", "sms", "email", "fax"])
def test_outbox_mode_uses_the_outbox_for_every_channel(name: str, tmp_path) -> None:
    settings = live_settings(delivery="outbox", outbox_dir=tmp_path, twilio_auth_token=None)
    assert isinstance(get_channel(name, settings), OutboxChannel)


@pytest.mark.parametrize(
    "name, overrides, kind",
    [
        ("sms", {}, TwilioSMS),
        ("email", {}, SendGridEmail),
        ("fax", {"fax_provider": "sinch"}, SinchFax),
        ("fax", {"fax_provider": "email_gateway"}, EmailFaxGateway),
    ],
)
def test_live_mode_builds_provider_channels(name: str, overrides: dict, kind: type) -> None:
    if name == "fax":
        need_cjk_font()
    channel = get_channel(name, live_settings(**overrides))
    assert isinstance(channel, kind)
    channel.close()  # type: ignore[attr-defined]


def test_live_mode_stops_before_sending_without_credentials() -> None:
    with pytest.raises(ConfigError, match="CAREFLOW_TWILIO_ACCOUNT_SID is missing"):
        get_channel("sms", live_settings(twilio_account_sid=None))


def test_unknown_channel() -> None:
    with pytest.raises(ConfigError, match="unknown or unavailable channel 'pigeon'"):
        get_channel("pigeon", live_settings())


def test_a_channel_needs_only_its_providers_settings(monkeypatch) -> None:
    """Each provider's settings are one model; a channel is built from that model alone."""
    from careflow import registry
    from careflow.settings import Settings, TwilioSettings

    monkeypatch.setenv("CAREFLOW_TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("CAREFLOW_TWILIO_AUTH_TOKEN", "f" * 32)
    monkeypatch.setenv("CAREFLOW_TWILIO_FROM_NUMBER", "+15005550006")
    monkeypatch.setenv("CAREFLOW_CREDENTIALS_FROM_PREFECT_BLOCKS", "false")
    monkeypatch.setenv("CAREFLOW_RATE_LIMIT_BACKEND", "local")
    entry = registry.get("sms")
    assert entry.settings_model is TwilioSettings
    assert "twilio_auth_token" in TwilioSettings.model_fields
    assert "sendgrid_api_key" not in TwilioSettings.model_fields  # no other provider's secrets
    assert "database_url" not in TwilioSettings.model_fields
    with TwilioSMS(TwilioSettings()) as channel:
        assert channel.sender == {"from_": "+15005550006"}
    assert set(TwilioSettings.model_fields) <= set(Settings.model_fields)


@pytest.mark.prefect
@pytest.mark.xdist_group("prefect")
def test_credentials_from_careflows_own_prefect_blocks(prefect_api) -> None:
    """Twilio and SendGrid credentials kept in careflow's blocks, secrets masked."""
    from careflow.channels.blocks import SendGridCredentials, TwilioCredentials

    TwilioCredentials(account_sid="AC" + "1" * 32, auth_token="f" * 32).save(
        "careflow", overwrite=True
    )
    SendGridCredentials(api_key="SG.block-key").save("careflow", overwrite=True)
    try:
        settings = Settings(credentials_from_prefect_blocks=True)
        assert credentials.credential(settings, "twilio_auth_token") == "f" * 32
        assert credentials.credential(settings, "sendgrid_api_key") == "SG.block-key"
        assert "f" * 32 not in repr(TwilioCredentials.load("careflow"))
        # the environment still wins
        env = Settings(credentials_from_prefect_blocks=True, twilio_auth_token="e" * 32)
        assert credentials.credential(env, "twilio_auth_token") == "e" * 32
    finally:
        # the Prefect API is shared by the session's "prefect" tests: flows run
        # later there must not find these credentials
        TwilioCredentials.delete("careflow")
        SendGridCredentials.delete("careflow")
