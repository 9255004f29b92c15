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
message. Filters format in the customer's locale with Babel:

    {{ amount | money }}  {{ amount | money("USD") }}
    {{ day | date }}  {{ day | date("long") }}
    {{ customer | greeting_name }}

Each message renders within a deadline, a size and a memory limit
(``CAREFLOW_RENDER_*`` settings), in a render worker process that is killed
when a template runs past them: careflow/template_sandbox.py has the checks
inside a render, careflow/render_worker.py the process around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2.sandbox import SecurityError

from careflow import registry
from careflow.errors import ConfigError, TemplateError, TemplateLimitError
from careflow.journey_spec import template_prefix
from careflow.render_worker import WorkerConfig, render_jobs
from careflow.settings import Settings
from careflow.template_sandbox import BoundedSandbox
from careflow.unsubscribe import inert_placeholder


@dataclass(frozen=True)
class Rendered:
    body: str
    subject: str | None = None
    html: str | None = None


@lru_cache(maxsize=64)
def babel_locale(tag: str) -> Locale:
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def _locale_of(ctx) -> Locale:
    return babel_locale(ctx.get("locale") or "en")


@jinja2.pass_context
def _money(ctx, amount, currency: str | None = None) -> str:
    if amount is None:  # careflow.money.with_amounts: a sum over several currencies
        raise ValueError("no amount to show: it is missing or mixes currencies")
    currency = currency or ctx.get("currency") or "CNY"
    return format_currency(Decimal(str(amount)), currency, locale=_locale_of(ctx))


@jinja2.pass_context
def _date(ctx, value, fmt: str = "medium") -> str:
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        value = value.date()
    return _format_day(value, fmt, str(_locale_of(ctx)))


@lru_cache(maxsize=4096)
def _format_day(value: date, fmt: str, locale: str) -> str:
    """Babel's date formatting, once per (day, format, locale): a campaign's messages
    share a few hundred days, and formatting is a third of an SMS render."""
    return format_date(value, format=fmt, locale=locale)


@jinja2.pass_context
def _number(ctx, value, fmt: str | None = None) -> str:
    return format_decimal(value, format=fmt, locale=_locale_of(ctx))


def greeting_name(customer) -> str:
    """How to address a customer: the full name in Chinese, the given name in English."""
    locale = (customer.get("locale") or "").lower()
    if locale.startswith("zh"):
        return customer.get("full_name") or customer.get("given_name") or ""
    return customer.get("given_name") or customer.get("full_name") or ""


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


class Renderer:
    """Finds a campaign's templates for one channel and locale, and renders them in a
    render worker process (careflow/render_worker.py).

    ``timeout_seconds``, ``max_chars`` and ``max_memory_mb`` bound each message
    (the defaults are the settings' defaults; :meth:`from_settings` reads the
    configured ones). Templates are found and compiled here, once per renderer
    (a run's batch); the worker renders them by name.
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
        self.templates_dir = Path(templates_dir)
        self.default_locale = default_locale
        self.env = BoundedSandbox(
            timeout_seconds=timeout_seconds,
            max_chars=max_chars,
            loader=jinja2.FileSystemLoader(self.templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html.j2"], default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=inert_placeholder,  # only the template's own unsubscribe placeholder
        )
        self.env.filters.update(
            money=_money, date=_date, number=_number, greeting_name=greeting_name
        )
        self.worker_config = WorkerConfig(
            str(self.templates_dir), default_locale, timeout_seconds, max_chars, max_memory_mb
        )
        #: (campaign, stem, locale) -> (template or None, names tried): ``_find``
        self._found: dict[tuple, tuple] = {}
        #: name -> template, for the renders of one request in a worker: ``render_names``
        self._loaded: dict[str, jinja2.Template] = {}

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
        tried = []
        for loc in locale_chain(locale, self.default_locale):
            name = f"{template_prefix(campaign)}{stem.format(locale=loc)}"
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

    # --- rendering, in this process (the worker's side) ---------------------------------
    def render_names(self, names, locale: str | None, context: dict) -> dict[str, str | None]:
        """Render the files ``template_names`` gave, sharing one deadline and size limit;
        {field: text}. Templates are looked up once until :meth:`forget`."""
        context = {**context, "locale": locale or self.default_locale}
        out: dict[str, str | None] = {}
        with self.env.message():
            for field, name in names:
                out[field] = self._run(self._template(name), context) if name else None
        if out.get("subject") is not None:
            out["subject"] = " ".join(out["subject"].split())  # one line, however written
        return out

    def render_here(self, campaign: str, channel: str, locale: str | None, context: dict):
        """:meth:`render` in this process: the sandbox's limits, not the worker's (bench/)."""
        names = self.template_names(campaign, channel, locale)
        return Rendered(**self.render_names(names, locale, context))

    def forget(self) -> None:
        """Look templates up again (a worker does, for each request)."""
        self._loaded.clear()

    def _template(self, name: str) -> jinja2.Template:
        template = self._loaded.get(name)
        if template is None:
            try:
                template = self._loaded[name] = self.env.get_template(name)
            except jinja2.TemplateNotFound:
                raise TemplateError(f"template {name} not found") from None
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{name} line {exc.lineno}: {exc.message}") from None
        return template

    def _run(self, template: jinja2.Template, context: dict) -> str:
        try:
            return self.env.render_bounded(template, context).strip()
        except TemplateError as exc:  # a render limit
            raise TemplateError(f"{template.name}: {exc}") from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{template.name}: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateError(f"{template.name}: not allowed in templates: {exc}") from None
        except MemoryError:  # past the worker's address space (careflow/render_worker.py)
            raise TemplateLimitError(
                f"{template.name}: {self.worker_config.out_of_memory()}"
            ) from None
        except RecursionError:
            raise TemplateError(
                f"{template.name}: calls or values nested too deeply (a macro that calls "
                "itself without end?)"
            ) from None
        except Exception as exc:  # a filter fed bad data, a division by zero...
            raise TemplateError(f"{template.name}: {type(exc).__name__}: {exc}") from None
