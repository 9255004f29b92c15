"""Fax: an A4 PDF rendered from the message, sent by Sinch Fax or an email gateway.

Twilio's Programmable Fax was shut down in December 2021. careflow sends
faxes through the Sinch Fax API v3 (formerly Phaxio): ``POST
{base}/v3/projects/{projectId}/faxes`` as multipart/form-data with the PDF as
``file`` plus ``to``, ``from``, ``callbackUrl`` and ``callbackUrlContentType``
(``application/json``: the callback's encoding), authenticated with an
access key id and secret (HTTP basic). Sinch documents no idempotency key,
so the exactly-once rules of careflow/channels/delivery.py apply unchanged.

Where a fax provider is not an option, ``fax_provider="email_gateway"`` sends
the same PDF as an attachment through the email channel to an email-to-fax
address (``CAREFLOW_FAX_EMAIL_GATEWAY_ADDRESS``, e.g.
``{e164}@fax.example.net``).

The PDF needs a font with Chinese glyphs: the built-in PDF fonts have none
and would print boxes or fail. :func:`find_cjk_font` takes
``CAREFLOW_FAX_FONT_PATH`` or searches the usual places (Debian's
fonts-wqy-zenhei / fonts-noto-cjk, macOS, Windows, then fontconfig), and a fax
channel refuses to be built without one.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import httpx
from fpdf import FPDF
from fpdf.enums import WrapMode
from sendgrid.helpers.mail import Mail

from careflow.addresses import normalize_phone
from careflow.channels.credentials import SecretLoader, require
from careflow.channels.delivery import (
    ProviderChannel,
    RateLimiter,
    RetryPolicy,
    error_for_exception,
    error_for_status,
    parse_retry_after,
)
from careflow.channels.email import PdfAttachment, SendGridEmail
from careflow.channels.sms import check_url
from careflow.errors import ConfigError, InvalidContact, PermanentError, Skip
from careflow.messages import Message
from careflow.settings import FaxSettings

log = logging.getLogger(__name__)
# fontTools reports every table it drops while subsetting a CJK font; noise.
logging.getLogger("fontTools.subset").setLevel(logging.ERROR)

# --- fonts -------------------------------------------------------------------
CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # Debian/Ubuntu fonts-wqy-zenhei
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/STHeiti Light.ttc",  # macOS
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",  # Windows: Microsoft YaHei
    "C:/Windows/Fonts/simsun.ttc",
)
_PROBE = "中文"


@dataclass(frozen=True)
class CjkFont:
    """A font file and, for collections (.ttc), the face with Simplified Chinese."""

    path: Path
    index: int = 0


@lru_cache(maxsize=16)
def _cjk_face(path: Path) -> int | None:
    """Index of a face in ``path`` covering Chinese (SC preferred), None if none does."""
    from fontTools.ttLib import TTCollection, TTFont

    covering = []
    try:
        if path.suffix.lower() in (".ttc", ".otc"):
            container: TTCollection | TTFont = TTCollection(str(path), lazy=True)
            faces = list(container.fonts)  # type: ignore[union-attr]
        else:
            container = TTFont(str(path), lazy=True)
            faces = [container]
        with container:  # lazy loading keeps the file open until closed
            for index, face in enumerate(faces):
                cmap = face.getBestCmap() or {}
                if all(ord(c) in cmap for c in _PROBE):
                    covering.append((index, str(face["name"].getDebugName(4) or "")))
    except Exception:
        return None
    for index, name in covering:  # Noto CJK collections lead with the Japanese face
        if re.search(r"\bSC\b|Zen Hei|Micro Hei|YaHei", name):
            return index
    return covering[0][0] if covering else None


def _fontconfig_candidate() -> str | None:
    if not shutil.which("fc-match"):
        return None
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def find_cjk_font(configured: Path | None = None) -> CjkFont:
    """The font to render faxes with; ConfigError if none with Chinese glyphs exists."""
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ConfigError(f"CAREFLOW_FAX_FONT_PATH: no such file {str(path)!r}")
        index = _cjk_face(path)
        if index is None:
            raise ConfigError(f"CAREFLOW_FAX_FONT_PATH: {path.name} has no Chinese glyphs")
        return CjkFont(path, index)
    candidates = [*CJK_FONT_CANDIDATES, _fontconfig_candidate()]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if path.is_file() and (index := _cjk_face(path)) is not None:
            return CjkFont(path, index)
    raise ConfigError(
        "no CJK font found for fax PDFs: install one (Debian: apt-get install "
        "fonts-wqy-zenhei or fonts-noto-cjk) or set CAREFLOW_FAX_FONT_PATH"
    )


# --- the PDF -------------------------------------------------------------------
class _FaxPDF(FPDF):
    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("cjk", size=9)
        self.cell(0, 10, f"{self.page_no()} / {{nb}}", align="C")


def render_fax_pdf(body: str, font: CjkFont, *, title: str | None = None) -> bytes:
    """An A4 PDF of ``body`` (and an optional title) set in ``font``."""
    pdf = _FaxPDF(format="A4", unit="mm")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_font("cjk", fname=str(font.path), collection_font_number=font.index)
    pdf.set_title(title or "Fax")
    pdf.add_page()
    if title:
        pdf.set_font("cjk", size=16)
        pdf.multi_cell(0, 9, title, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
    pdf.set_font("cjk", size=12)
    for paragraph in body.replace("\r\n", "\n").replace("\t", "    ").split("\n"):
        # Left-aligned: justifying a line broken at its one space stretches it.
        if not _mostly_cjk(paragraph):  # Latin text wraps at spaces
            pdf.multi_cell(
                0, 7, paragraph, align="L", wrapmode=WrapMode.WORD, new_x="LMARGIN", new_y="NEXT"
            )
            continue
        for line in cjk_lines(paragraph, pdf.epw, pdf.get_string_width) or [""]:
            pdf.cell(0, 7, line, align="L", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


# Chinese typesetting rules: these never start a line (they hang at the end
# of the previous one instead), and opening brackets never end one.
NO_LINE_START = set("，。、；：？！）」』》〉】〕”’…—～,.;:?!)")
NO_LINE_END = set("（「『《〈【〔“‘(")


def cjk_lines(text: str, width: float, measure) -> list[str]:
    """Break Chinese text between characters to fit ``width``, following the
    line-start and line-end rules above. ``measure(s)`` is the width of ``s``."""
    lines: list[str] = []
    line = ""
    for char in text:
        if line and measure(line + char) > width and char not in NO_LINE_START:
            carry = ""
            while line and line[-1] in NO_LINE_END:  # an opening bracket moves down
                carry, line = line[-1] + carry, line[:-1]
            lines.append(line)
            line = carry
        line += char
    if line:
        lines.append(line)
    return lines


def _mostly_cjk(text: str) -> bool:
    letters = [c for c in text if not c.isspace()]
    cjk = sum(1 for c in letters if "\u2e80" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef")
    return bool(letters) and cjk * 3 >= len(letters)


# --- channels ------------------------------------------------------------------
def _render(message: Message, font: CjkFont) -> bytes:
    try:
        return render_fax_pdf(message.body, font, title=message.subject)
    except Exception as exc:  # fpdf2 raises several types for unrenderable text
        raise PermanentError("render_error", f"{type(exc).__name__}: {exc}"[:300]) from exc


def _fax_number(message: Message, region: str) -> str:
    try:
        return normalize_phone(message.to, region)
    except InvalidContact as exc:
        raise Skip("invalid_contact", str(exc)) from None


class SinchFax(ProviderChannel):
    """Fax through the Sinch Fax API v3. One Outcome per message."""

    name: ClassVar[str] = "fax"

    def __init__(
        self,
        settings: FaxSettings,
        *,
        http_client: httpx.Client | None = None,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        secrets: SecretLoader | None = None,
    ):
        if not settings.sinch_project_id:
            raise ConfigError("CAREFLOW_SINCH_PROJECT_ID is missing")
        if not re.fullmatch(r"[A-Za-z0-9-]+", settings.sinch_project_id):
            raise ConfigError("CAREFLOW_SINCH_PROJECT_ID must be a Sinch project id")
        self._auth = (
            require(settings, "sinch_key_id", loader=secrets),
            require(settings, "sinch_key_secret", loader=secrets),
        )
        base = check_url(settings.sinch_fax_api_base_url, "CAREFLOW_SINCH_FAX_API_BASE_URL")
        self.url = f"{base}/v3/projects/{settings.sinch_project_id}/faxes"
        self.fields: dict[str, str] = {}
        if settings.fax_from_number:
            if not re.fullmatch(r"\+[1-9]\d{6,14}", settings.fax_from_number):
                raise ConfigError("CAREFLOW_FAX_FROM_NUMBER must be an E.164 number")
            self.fields["from"] = settings.fax_from_number
        callback = check_url(settings.fax_callback_url, "CAREFLOW_FAX_CALLBACK_URL")
        if callback:
            # Sinch posts the callback as multipart/form-data unless asked for JSON; careflow
            # serve reads both, and asking makes the encoding this channel's choice, not a
            # default of Sinch's
            self.fields |= {"callbackUrl": callback, "callbackUrlContentType": "application/json"}
        self.font = find_cjk_font(settings.fax_font_path)
        self.region = settings.sms_default_region
        self._owns_http = http_client is None
        self.http = http_client or httpx.Client(
            timeout=httpx.Timeout(
                settings.delivery_read_timeout_seconds,
                connect=settings.delivery_connect_timeout_seconds,
            ),
            limits=httpx.Limits(max_connections=settings.fax_concurrency),
        )
        self._deliver_with(
            settings,
            prepare=self._prepare,
            send=self._send,
            limit_name=settings.fax_rate_limit_name,
            rate=settings.fax_rate_per_second,
            concurrency=settings.fax_concurrency,
            limiter=limiter,
            policy=policy,
        )

    def __repr__(self) -> str:  # never show credentials
        return f"SinchFax(url={self.url!r})"

    def close(self) -> None:
        """Close the HTTP client this channel opened (not a handed-in one)."""
        if self._owns_http:
            self.http.close()

    def _prepare(self, message: Message) -> tuple[str, bytes]:
        return _fax_number(message, self.region), _render(message, self.font)

    def _send(self, payload: tuple[str, bytes]) -> str | None:
        to, pdf = payload
        try:
            response = self.http.post(
                self.url,
                data={"to": to, **self.fields},
                files={"file": ("fax.pdf", pdf, "application/pdf")},
                auth=self._auth,
            )
        except httpx.HTTPError as exc:
            raise error_for_exception(exc) from exc
        if response.status_code >= 400:
            raise error_for_status(
                response.status_code,
                f"sinch HTTP {response.status_code}: {response.text[:250]}",
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            fax_id = response.json().get("id")
        except (ValueError, AttributeError):  # accepted, but no JSON: still sent
            return None
        return str(fax_id) if fax_id else None


class EmailFaxGateway(ProviderChannel):
    """Fax as an email with the PDF attached, to an email-to-fax gateway address."""

    name: ClassVar[str] = "fax"

    def __init__(
        self,
        settings: FaxSettings,
        *,
        email: SendGridEmail | None = None,
        limiter: RateLimiter | None = None,
        policy: RetryPolicy | None = None,
        secrets: SecretLoader | None = None,
    ):
        template = settings.fax_email_gateway_address
        if not template:
            raise ConfigError("CAREFLOW_FAX_EMAIL_GATEWAY_ADDRESS is missing")
        if "@" not in template or not ("{e164}" in template or "{digits}" in template):
            raise ConfigError(
                "CAREFLOW_FAX_EMAIL_GATEWAY_ADDRESS must contain {e164} or {digits} and a "
                "domain, e.g. {e164}@fax.example.net"
            )
        try:
            template.format(e164="+10000000000", digits="10000000000")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(
                "CAREFLOW_FAX_EMAIL_GATEWAY_ADDRESS may only use {e164} and {digits}"
            ) from None
        self.template = template
        self.font = find_cjk_font(settings.fax_font_path)
        self.region = settings.sms_default_region
        self.email = email or SendGridEmail(settings, secrets=secrets)
        self._deliver_with(
            settings,
            prepare=self._prepare,
            send=self.email.post,
            limit_name=settings.fax_rate_limit_name,
            rate=settings.fax_rate_per_second,
            concurrency=settings.fax_concurrency,
            limiter=limiter,
            policy=policy,
        )

    def close(self) -> None:
        self.email.close()

    def _prepare(self, message: Message) -> Mail:
        number = _fax_number(message, self.region)
        pdf = _render(message, self.font)
        address = self.template.format(e164=number, digits=number.lstrip("+"))
        # The email goes to a machine, not the customer: no unsubscribe headers;
        # the opt-out notice is part of the rendered fax itself.
        envelope = dataclasses.replace(
            message,
            subject=message.subject or f"Fax {number}",
            body=f"Fax for {number}, {message.key}",
            html=None,
            marketing=False,
        )
        return self.email.build_mail(
            envelope, attachments=[PdfAttachment("fax.pdf", pdf)], to=address
        )
