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
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes serving the one port, each with its own database writer: one per "
    "core helps under load (docs/responses.md, \"Throughput\"); every event is still "
    "stored and acted on once.",
)
def serve(host, port, local, workers):
    """Receive delivery status, replies, opt-outs and unsubscribes (docs/responses.md),
    the shop's events (POST /events, docs/events.md) and serve the preference centre
    (docs/preferences.md).

    Runs until stopped. Put it behind your HTTPS reverse proxy and set
    CAREFLOW_PUBLIC_BASE_URL to the URL providers call. It logs which
    receivers are on when it starts, and why the others are off.
    """
    import os

    import uvicorn

    from careflow.errors import ConfigError

    if local and not _loopback(host):
        raise ConfigError(f"--local listens on this machine only (--host 127.0.0.1), not {host}")
    app = _app(local)  # a configuration error stops it here, before any worker starts
    public = _settings().public_base_url or "not set"
    each = f", {workers} worker processes" if workers > 1 else ""
    _echo(f"careflow serve on http://{host}:{port} (public URL: {public}{each})")
    # uvicorn's access log prints query strings (unsubscribe tokens): ours prints routes only
    options = {"host": host, "port": port, "access_log": False, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(app, **options)
        return
    # each worker process builds its own app (its own engine and writer) on the socket
    # uvicorn opened once; the database's unique keys keep every event stored once
    os.environ[_LOCAL] = "1" if local else ""
    uvicorn.run("careflow.cli.serve:worker_app", factory=True, workers=workers, **options)


#: tells a worker process ``--local`` (uvicorn's workers are started afresh, by name)
_LOCAL = "CAREFLOW_SERVE_WORKER_LOCAL"


def worker_app():
    """The app one of ``--workers`` builds for itself (uvicorn calls it in each process)."""
    import os

    return _app(os.environ.get(_LOCAL) == "1")


def _app(local: bool):
    """The service as configured: settings, the keys from Prefect blocks, the unsubscribe
    tokens, logging."""
    import logging

    from pydantic import SecretStr

    from careflow.channels.credentials import credential, unsubscribe_tokens
    from careflow.service.app import create_app

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
    return app


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return host == "localhost"
