"""SMS text rules that every delivery mode shares: segments, the opt-out line, limits.

Segments. An SMS carries 140 octets: 160 GSM-7 septets or 70 UCS-2 code
units. Longer texts are split and each part loses room to the
concatenation header: 153 septets or 67 code units. Characters of the GSM
extension table (``^{}[]~|€\\`` and form feed) take two septets and are
never split across parts; a character outside GSM-7 (any Chinese text)
switches the whole message to UCS-2, where characters beyond the Basic
Multilingual Plane (emoji) take two code units. Carriers bill per segment,
so ``sms_max_segments`` caps it, in previews, the outbox and live sends alike.

Opt-out. Marketing SMS to Chinese (zh-CN) recipients end with the customary
"回复TD退订" (reply TD to unsubscribe); the text is a setting and counts
toward the segments.

Kept apart from careflow/channels/sms.py so previews and outbox runs never import
the Twilio SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from careflow.errors import Unsendable
from careflow.rendering import Rendered
from careflow.settings import TwilioSettings

#: Twilio's limit on one message body (characters)
MAX_BODY_CHARS = 1600

# --- segments ------------------------------------------------------------------
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """How a text travels as SMS.

    ``chars`` counts characters as a reader would; ``units`` counts what the
    encoding counts (septets for GSM-7, UTF-16 code units for UCS-2).
    """

    encoding: str  # "GSM-7" or "UCS-2"
    chars: int
    units: int
    segments: int


def _pack(costs: list[int], single: int, part: int) -> int:
    """Segments needed for characters costing ``costs`` units, never splitting one."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments


def sms_segments(text: str) -> SegmentInfo:
    """Encoding, length and segment count of ``text`` sent as one SMS."""
    chars = set(text)
    if chars <= GSM7_ALL:
        extended = chars & GSM7_EXTENSION
        units = len(text) + (sum(text.count(c) for c in extended) if extended else 0)
        if units <= 160:  # at most one segment: no need to pack (most care texts)
            return SegmentInfo("GSM-7", len(text), units, 1 if units else 0)
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return SegmentInfo("GSM-7", len(text), units, _pack(costs, 160, 153))
    costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    units = sum(costs)
    return SegmentInfo("UCS-2", len(text), units, 1 if units <= 70 else _pack(costs, 70, 67))


def _is_zh_cn(locale: str) -> bool:
    return locale.lower().replace("_", "-") in {"zh", "zh-cn", "zh-hans", "zh-hans-cn"}


def with_optout(body: str, *, locale: str, marketing: bool, optout_zh: str) -> str:
    """``body`` as it will be sent: zh-CN marketing texts end with the opt-out line.

    A body that already ends with it keeps it as it is; the line anywhere else (a
    customer's name that reads "回复TD退订") does not stand in for it.
    """
    if not (marketing and optout_zh and _is_zh_cn(locale)) or body.rstrip().endswith(optout_zh):
        return body
    return body.rstrip() + optout_zh


@dataclass(frozen=True, slots=True)
class SmsPreview:
    """What a preview shows for one SMS: final text, its segments, and the verdict."""

    text: str
    info: SegmentInfo
    max_segments: int

    @property
    def within_limit(self) -> bool:
        fits_body = len(self.text) <= MAX_BODY_CHARS
        return self.info.segments <= self.max_segments and fits_body

    @property
    def problem(self) -> str | None:
        if self.within_limit:
            return None
        return (
            f"{self.info.segments} segments ({self.info.encoding}, {self.info.units} units) "
            f"exceeds CAREFLOW_SMS_MAX_SEGMENTS={self.max_segments}"
        )


def sms_preview(body: str, *, locale: str, marketing: bool, settings: TwilioSettings) -> SmsPreview:
    """The SMS a live send would produce from ``body``; used by previews and the channel."""
    text = with_optout(body, locale=locale, marketing=marketing, optout_zh=settings.sms_optout_zh)
    return SmsPreview(text, sms_segments(text), settings.sms_max_segments)


def finish_sms(
    rendered: Rendered, *, locale: str, marketing: bool, settings: TwilioSettings
) -> Rendered:
    """The SMS exactly as it goes out (opt-out line added); Unsendable when too long."""
    sms = sms_preview(rendered.body, locale=locale, marketing=marketing, settings=settings)
    if sms.problem:
        raise Unsendable("sms_too_long", sms.problem)
    return replace(rendered, body=sms.text)
