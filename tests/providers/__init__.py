"""Loopback stand-ins for the delivery providers, used by tests/channels.

- ``fault_server``: one aiohttp server speaking Twilio, SendGrid and Sinch Fax
  that fails on purpose (5xx, 429 + Retry-After, resets, stalls) and counts
  accepted requests per recipient.
- ``prism``: starts Stoplight Prism on the providers' official OpenAPI specs
  (/work/shared/provider-specs or CAREFLOW_PROVIDER_SPECS) and reads its log
  for spec violations.
- ``throughput``: measures each live channel against the fault server
  (``.venv/bin/python -m tests.providers.throughput``).
"""
