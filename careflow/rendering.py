"""Rendering campaign templates with Jinja2, safely and in the customer's locale.

Templates live in ``templates/<campaign>/`` (a journey's send step's in its journey's
folder, named after the step: ``templates/<journey>/<step>.sms.en.j2``):

    sms.<locale>.j2                  SMS body
    fax.<locale>.j2                  fax page text
    email.<locale>.subject.j2        email subject (one line)
    email.<locale>.txt.j2            email plain-text part
    email.<locale>.html.j2           email HTML part (optional)

``<locale>`` is a BCP 47 tag such as ``zh-CN`` or ``en``. A customer's locale
falls back from ``zh-CN`` to ``zh`` to the default locale. Templates run in
Jinja's sandbox (marketers write them, not developers) with StrictUndefined,
so a misspelt variable is an error for that recipient, not a blank in a
message; its filters (money, date, number, greeting_name) format in the
customer's locale (careflow/template_env.py, the environment both sides share).

Each message renders within a deadline, a size and a memory limit
(``CAREFLOW_RENDER_*`` settings), in a render worker process that is killed
when a template runs past them: careflow/template_sandbox.py has the checks
inside a render, careflow/render_worker.py the process around it. This module
is the caller's side: it finds a message's templates and hands them to a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2

from careflow import registry
from careflow.errors import ConfigError, TemplateError
from careflow.journey_spec import template_prefix
from careflow.render_worker import WorkerConfig, render_jobs
from careflow.settings import Settings
from careflow.template_env import TemplateRunner
from careflow.variants import split_source


@dataclass(frozen=True)
class Rendered:
    body: str
    subject: str | None = None
    html: str | None = None


def locale_chain(locale: str | None, default: str) -> list[str]:
    """Locales to try, most specific first: zh-CN -> zh -> default."""
    chain = []
    if locale:
        chain.append(locale)
        if "-" in locale:
            chain.append(locale.split("-", 1)[0])
    chain.append(default)
    return list(dict.fromkeys(chain))


def _parts(channel: str):
    try:
        parts = registry.get(channel).parts
    except ConfigError as exc:
        raise TemplateError(str(exc)) from None
    if not parts:
        raise TemplateError(f"channel {channel!r} has no templates of its own")
    return parts


class Renderer(TemplateRunner):
    """Finds a campaign's templates for one channel and locale, and renders them in a
    render worker process (careflow/render_worker.py).

    ``timeout_seconds``, ``max_chars`` and ``max_memory_mb`` bound each message
    (the defaults are the settings' defaults; :meth:`from_settings` reads the
    configured ones). Templates are found and compiled here, once per renderer
    (a run's batch), in the environment the worker renders them in by name
    (``TemplateRunner``, whose ``render_names`` this process may call too).
    """

    def __init__(
        self,
        templates_dir: Path,
        default_locale: str = "en",
        *,
        timeout_seconds: float = 2.0,
        max_chars: int = 200_000,
        max_memory_mb: int = 256,
    ):
        super().__init__(
            templates_dir,
            default_locale,
            timeout_seconds=timeout_seconds,
            max_chars=max_chars,
            max_memory_mb=max_memory_mb,
        )
        self.worker_config = WorkerConfig(
            str(self.templates_dir), default_locale, timeout_seconds, max_chars, max_memory_mb
        )
        #: (campaign, stem, locale) -> (template or None, names tried): ``_find``
        self._found: dict[tuple, tuple] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Renderer:
        """A renderer for the configured templates, locale and render limits."""
        return cls(
            settings.templates_dir,
            settings.default_locale,
            timeout_seconds=settings.render_timeout_seconds,
            max_chars=settings.render_max_chars,
            max_memory_mb=settings.render_max_memory_mb,
        )

    def _find(self, campaign: str, stem: str, locale: str | None, required: bool = True):
        """The template of this part for ``locale`` or the nearest fallback; each answer,
        a missing one too, is looked up once per renderer (a run's batch): on every
        message Jinja checked the file's time, and a locale without its own template
        (``en-GB``) failed a file lookup before falling back."""
        key = (campaign, stem, locale)
        if key not in self._found:
            self._found[key] = self._load(campaign, stem, locale)
        template, tried = self._found[key]
        if template is None and required:
            raise TemplateError(f"no template found; tried {', '.join(tried)}")
        return template

    def _load(self, campaign: str, stem: str, locale: str | None):
        """An experiment's variant (``campaign@variant``) has the parts it changes (its
        subject, say); the others are the control's, the campaign's own."""
        tried = []
        control, variant = split_source(campaign)
        sources = [campaign, control] if variant else [campaign]
        for source in sources:
            for loc in locale_chain(locale, self.default_locale):
                name = f"{template_prefix(source)}{stem.format(locale=loc)}"
                tried.append(name)
                try:
                    return self.env.get_template(name), tried
                except jinja2.TemplateNotFound:
                    continue
                except jinja2.TemplateSyntaxError as exc:
                    raise TemplateError(f"{name} line {exc.lineno}: {exc.message}") from None
        return None, tried

    def has_channel(self, campaign: str, channel: str) -> bool:
        """True when ``campaign`` has its templates for ``channel`` (any locale)."""
        first = next((p for p in _parts(channel) if p.required), None)
        return first is not None and self._find(campaign, first.stem, None, False) is not None

    def template_names(self, campaign: str, channel: str, locale: str | None):
        """((field, template name or None), ...): the files that make this message. The
        channel's registry entry says which parts a message has."""
        out = []
        for part in _parts(channel):
            template = self._find(campaign, part.stem, locale, part.required)
            out.append((part.field, template.name if template else None))
        return tuple(out)

    # --- rendering, in a worker ---------------------------------------------------------
    def render(self, campaign: str, channel: str, locale: str | None, context: dict) -> Rendered:
        """Render one message; raise TemplateError with the template name and cause."""
        (result,) = self.render_many([(campaign, channel, locale, context)])
        if isinstance(result, TemplateError):
            raise result
        return result

    def render_many(
        self,
        requests: Iterable[tuple[str, str, str | None, dict]],
        check_stop: Callable[[], None] | None = None,
    ) -> Iterator[Rendered | TemplateError]:
        """Render (campaign, channel, locale, context) requests in a render worker; yields,
        in order, each message or the TemplateError that says why it has none. All parts
        of a message share one deadline and one size limit. ``check_stop`` runs while
        waiting and may raise to stop (the worker is killed)."""
        prepared: list = []
        for campaign, channel, locale, context in requests:
            try:
                prepared.append((self.template_names(campaign, channel, locale), locale, context))
            except TemplateError as exc:
                prepared.append(exc)
        done = render_jobs(
            self.worker_config, [p for p in prepared if isinstance(p, tuple)], check_stop
        )
        for p in prepared:
            if isinstance(p, TemplateError):
                yield p
                continue
            result = next(done)
            yield result if isinstance(result, TemplateError) else Rendered(**result)
        next(done, None)  # the end: the worker goes back for the next batch

    def render_file(self, name: str, context: dict) -> str:
        """Render one template file in a render worker (lint checks a template there
        before it renders it in-process for line numbers)."""
        (result,) = render_jobs(self.worker_config, [((("body", name),), None, context)])
        if isinstance(result, TemplateError):
            raise result
        return result["body"]

    def render_here(self, campaign: str, channel: str, locale: str | None, context: dict):
        """:meth:`render` in this process: the sandbox's limits, not the worker's (bench/)."""
        names = self.template_names(campaign, channel, locale)
        return Rendered(**self.render_names(names, locale, context))
