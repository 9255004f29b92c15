"""Every error careflow raises on purpose, in one tree, documented in one place.

::

    CareflowError                 root; the CLI prints it as one line, exit code 2
    ├── ConfigError               bad or missing configuration or parameters; raised
    │                             before any work is done, the message names what to fix
    │   └── CampaignPaused        the campaign paused itself (its sending domain's spam
    │                                 reports passed the limit): runs refuse until resumed
    ├── DataError                 input data (an import file, a stored row) is unusable
    ├── TemplateError             a template is missing or failed to render
    │   └── TemplateLimitError    its render was stopped from outside: killed at its
    │                             deadline, out of memory, or its worker died
    ├── ChannelError              a channel failed as a whole, not for one recipient
    │   ├── ChannelDown           it would fail every message (a full or read-only
    │   │                         outbox, credentials the provider refuses): the run
    │   │                         stops, the rest is left for the next run
    │   └── DeliveryError         one send attempt failed (raised inside a channel's
    │       │                     delivery loop, turned into that message's Outcome)
    │       ├── TransientError    the provider certainly did not take it: retry is safe
    │       ├── PermanentError    the provider refused it: repeating fails the same way
    │       └── AmbiguousError    it may have been taken: never repeat it
    └── RecipientError            this one recipient's message cannot go out
        ├── InvalidContact        the contact point on file is unusable (skipped)
        ├── Skip                  a channel decided not to send it (skipped)
        └── Unsendable            it cannot be sent as rendered (failed)

Foreign exceptions (provider SDKs, the database driver, Jinja) are translated
where they enter careflow, with ``raise ... from exc``; nothing outside this
tree is meant to reach a user. Per-recipient problems never stop a batch:
flows and channels catch ``RecipientError``/``DeliveryError`` and record an
Outcome with the ``reason``.
"""

from __future__ import annotations


class CareflowError(Exception):
    """Root of every error careflow raises on purpose."""


class ConfigError(CareflowError):
    """Configuration or a parameter is missing or malformed; the message names it."""


class CampaignPaused(ConfigError):
    """The campaign is paused (careflow/pauses.py); ``pause`` holds the numbers that
    caused it, for the refused run's record."""

    def __init__(self, message: str, pause: dict):
        super().__init__(message)
        self.pause = pause


class DataError(CareflowError):
    """Input data is unusable; the message says where and why."""


class TemplateError(CareflowError):
    """A template is missing or failed to render."""


class TemplateLimitError(TemplateError):
    """A render was stopped by a limit the operating system enforces on the render
    worker (careflow/render_worker.py): rendering it again in-process would run away."""


class ChannelError(CareflowError):
    """A channel failed as a whole (not for one recipient)."""


class ChannelDown(ChannelError):
    """The channel cannot deliver any more messages: whatever it is handed would fail the
    same way (a full, read-only or forbidden outbox folder; credentials the provider
    refuses). ``outcomes`` are those of the messages it attempted, the one that hit the
    fault among them (retryable: it did not go out); the others were never started and
    go back to the next run. The run stops with this one line."""

    def __init__(self, reason: str, detail: str = "", outcomes: list | None = None):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail
        self.outcomes = outcomes or []

    def __str__(self) -> str:
        return self.detail or self.reason


class DeliveryError(ChannelError):
    """A send attempt failed; subclasses say whether repeating it is safe."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class TransientError(DeliveryError):
    """The provider certainly did not accept the request; retrying is safe."""

    def __init__(self, reason: str, detail: str | None = None, retry_after: float | None = None):
        super().__init__(reason, detail)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """The provider refused the request; repeating it would fail the same way.

    ``abort_batch`` (bad credentials, suspended account) fails the remaining
    messages of the batch without calling the provider, as retryable.
    """

    def __init__(self, reason: str, detail: str | None = None, *, abort_batch: bool = False):
        super().__init__(reason, detail)
        self.abort_batch = abort_batch


class AmbiguousError(DeliveryError):
    """The request may have been accepted; it must not be repeated."""


class RecipientError(CareflowError):
    """One recipient's message cannot go out; ``reason`` is what the ledger records."""

    reason: str = "unsendable"

    def __init__(self, reason: str | None = None, detail: str | None = None):
        self.reason = reason or type(self).reason
        self.detail = detail if detail is not None else self.reason
        super().__init__(self.detail)


class InvalidContact(RecipientError):
    """The contact point exists but cannot be used; str(exc) says why."""

    reason = "invalid_contact"

    def __init__(self, detail: str):
        super().__init__(None, detail)


class Skip(RecipientError):
    """Do not send this message (``skipped`` outcome), e.g. ``invalid_contact``."""


class Unsendable(RecipientError):
    """This message cannot be sent as rendered (``failed`` outcome)."""
