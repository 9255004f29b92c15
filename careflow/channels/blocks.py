"""careflow's own Prefect blocks for provider credentials.

Prefect has no Twilio or SendGrid integration, so careflow ships blocks an
operator can create in the UI (Blocks > +) or in code, with secret fields
stored encrypted by Prefect and shown masked:

    prefect block register -m channels.blocks      # once per Prefect server

then a block named ``careflow`` (or CAREFLOW_CREDENTIALS_BLOCK) of each type.
A channel looks for a credential in the environment first, then in these
blocks, then in Secret blocks named ``careflow-<field>`` (careflow/channels/credentials.py).
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class TwilioCredentials(Block):
    """Twilio account credentials for careflow's SMS channel and webhooks."""

    _block_type_name = "careflow Twilio"
    _block_type_slug = "careflow-twilio"
    _description = "Account SID and Auth Token careflow sends SMS and verifies callbacks with."

    account_sid: str = Field(description="Account SID (AC...).")
    auth_token: SecretStr = Field(description="Auth Token.")


class SendGridCredentials(Block):
    """SendGrid credentials for careflow's email channel and Event Webhook."""

    _block_type_name = "careflow SendGrid"
    _block_type_slug = "careflow-sendgrid"
    _description = "API key careflow sends email with; Event Webhook verification key."

    api_key: SecretStr = Field(description="API key (SG.).")
    webhook_public_key: str | None = Field(
        default=None, description="Signed Event Webhook verification key."
    )


class SinchCredentials(Block):
    """Sinch Fax access key for careflow's fax channel."""

    _block_type_name = "careflow Sinch fax"
    _block_type_slug = "careflow-sinch"
    _description = "Access key careflow sends faxes with."

    key_id: str = Field(description="Access key id.")
    key_secret: SecretStr = Field(description="Access key secret.")


#: settings field -> (block type, its attribute)
FIELDS: dict[str, tuple[type[Block], str]] = {
    "twilio_account_sid": (TwilioCredentials, "account_sid"),
    "twilio_auth_token": (TwilioCredentials, "auth_token"),
    "sendgrid_api_key": (SendGridCredentials, "api_key"),
    "sinch_key_id": (SinchCredentials, "key_id"),
    "sinch_key_secret": (SinchCredentials, "key_secret"),
}
