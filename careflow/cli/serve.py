"""``careflow serve``: the webhook receivers and the unsubscribe page."""

from __future__ import annotations

import click

from careflow.cli.common import _echo, _engine, _settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
@click.option(
    "--local",
    is_flag=True,
    help="Try it on this machine (loopback only): Twilio's signed URL may come from the "
    "Host header, and unsubscribe links use the outbox's key when none is configured.",
)
def serve(host, port, local):
    """Receive delivery status, replies, opt-outs and unsubscribes (docs/responses.md).

    Runs until stopped. Put it behind your HTTPS reverse proxy and set
    CAREFLOW_PUBLIC_BASE_URL to the URL providers call. It logs which
    receivers are on when it starts, and why the others are off.
    """
    import logging

    import uvicorn
    from pydantic import SecretStr

    from careflow.channels.credentials import credential, unsubscribe_tokens
    from careflow.errors import ConfigError
    from careflow.service.app import create_app

    if local and not _loopback(host):
        raise ConfigError(f"--local listens on this machine only (--host 127.0.0.1), not {host}")
    settings = _settings()
    # the keys senders take from Prefect blocks, the service takes from the same place
    twilio_token = credential(settings, "twilio_auth_token")
    if twilio_token:
        settings = settings.model_copy(update={"twilio_auth_token": SecretStr(twilio_token)})
    # the unsubscribe page is on when its links point here or its key is set
    wanted = local or settings.unsubscribe_base_url or credential(settings, "unsubscribe_secret")
    tokens = unsubscribe_tokens(settings, local=local) if wanted else None
    app = create_app(settings, _engine(), unsubscribe=tokens, local=local)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    public = settings.public_base_url or "not set"
    _echo(f"careflow serve on http://{host}:{port} (public URL: {public})")
    # uvicorn's access log prints query strings (unsubscribe tokens): ours prints routes only
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return host == "localhost"
