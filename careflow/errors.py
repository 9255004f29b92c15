"""One exception tree for careflow, documented in one place.

- ``CareflowError``: the root; the CLI turns any of these into a one-line
  message and exit code 2 instead of a traceback.
- ``ConfigError``: bad or missing configuration. Raised before any work is
  done (at settings load or channel construction), and its message names the
  setting to fix.
- ``TemplateError``: a template could not be found or rendered for one
  recipient. Flows catch it per recipient and record ``failed: template_error``.
- ``ChannelError``: a channel could not talk to its provider at all.
  Per-recipient problems are never raised: they come back as Outcomes.
- ``DataError``: input data (an import file, a segment parameter) is unusable.
"""


class CareflowError(Exception):
    """Root of every error careflow raises on purpose."""


class ConfigError(CareflowError):
    """Configuration is missing or malformed; the message names the setting."""


class TemplateError(CareflowError):
    """A template is missing or failed to render."""


class ChannelError(CareflowError):
    """A channel failed as a whole (not for one recipient)."""


class DataError(CareflowError):
    """Input data is unusable; the message says where and why."""
