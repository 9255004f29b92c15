"""The Jinja environment careflow's templates render in, and rendering them in this process.

Both sides of a render use it: the caller (careflow/rendering.py) finds and
compiles a message's templates with it, and a render worker
(careflow/render_worker.py) renders them by name with it, under the
sandbox's limits (careflow/template_sandbox.py) and within the worker's
memory. The filters format in the customer's locale with Babel:

    {{ amount | money }}  {{ amount | money("USD") }}
    {{ day | date }}  {{ day | date("long") }}
    {{ customer | greeting_name }}
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2.sandbox import SecurityError

from careflow.errors import TemplateError, TemplateLimitError
from careflow.template_sandbox import BoundedSandbox
from careflow.unsubscribe import inert_placeholder


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


def out_of_memory(max_memory_mb: int) -> str:
    """Why a message has no text when its render outgrew a worker's memory."""
    return (
        f"the template used more than {max_memory_mb} MB of memory "
        "(CAREFLOW_RENDER_MAX_MEMORY_MB)"
    )


class TemplateRunner:
    """Renders template files of ``templates_dir`` by name in this process, in careflow's
    sandbox with its filters: what a render worker does with each message.

    ``timeout_seconds`` and ``max_chars`` bound each message inside the sandbox;
    ``max_memory_mb`` is the worker's memory (careflow/render_worker.py), named when
    a render runs out of it.
    """

    def __init__(
        self,
        templates_dir: Path | str,
        default_locale: str = "en",
        *,
        timeout_seconds: float = 2.0,
        max_chars: int = 200_000,
        max_memory_mb: int = 256,
    ):
        self.templates_dir = Path(templates_dir)
        self.default_locale = default_locale
        self.max_memory_mb = max_memory_mb
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
        #: name -> template, for the renders of one request in a worker: ``render_names``
        self._loaded: dict[str, jinja2.Template] = {}

    def render_names(self, names, locale: str | None, context: dict) -> dict[str, str | None]:
        """Render the files ``names`` ((field, template name or None), ...: what
        ``Renderer.template_names`` gave), sharing one deadline and size limit;
        {field: text}. Templates are looked up once until :meth:`forget`."""
        context = {**context, "locale": locale or self.default_locale}
        out: dict[str, str | None] = {}
        with self.env.message():
            for field, name in names:
                out[field] = self._run(self._template(name), context) if name else None
        if out.get("subject") is not None:
            out["subject"] = " ".join(out["subject"].split())  # one line, however written
        return out

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
                f"{template.name}: {out_of_memory(self.max_memory_mb)}"
            ) from None
        except RecursionError:
            raise TemplateError(
                f"{template.name}: calls or values nested too deeply (a macro that calls "
                "itself without end?)"
            ) from None
        except Exception as exc:  # a filter fed bad data, a division by zero...
            raise TemplateError(f"{template.name}: {type(exc).__name__}: {exc}") from None
