"""What an import did with every row: loaded, skipped (why), malformed (where and why).

Shared by every importer. Each row read ends up in exactly one bucket, so
``rows_read == loaded + sum(skipped) + malformed_rows``. Problems are kept
with their line number (line 1 is the header), the first ``MAX_EXAMPLES``
of each list in full; counts are never capped.

Messages quote the offending value, but never more than ``SHOWN_CHARS`` of
it: one 100 MB field must not make a 100 MB error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_EXAMPLES = 20
#: characters of a value quoted in a message
SHOWN_CHARS = 40
#: longest message an import produces (a file-level DataError included)
MAX_MESSAGE = 300


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters with its full length."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut to ``limit`` characters (for text from elsewhere: drivers, parsers)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


@dataclass
class ImportReport:
    """The account of one import; importers extend it with what they created."""

    path: str
    rows_read: int = 0
    #: rows skipped on purpose, by reason: no_customer, cancellation, duplicate_row, ...
    skipped: dict[str, int] = field(default_factory=dict)
    #: malformed rows by kind: bad_quantity, bad_date, too_long, out_of_range, ...
    malformed: dict[str, int] = field(default_factory=dict)
    #: the first malformed rows as (line number, explanation); line 1 is the header
    examples: list[tuple[int, str]] = field(default_factory=list)
    #: the first repeated rows as (line number, line it repeats); counted in skipped
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    #: the encoding the file was read in, and whether it was detected or given
    encoding: str = ""
    #: how each date column's day/month values were read, by field label
    date_orders: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def malformed_rows(self) -> int:
        return sum(self.malformed.values())

    def loaded_lines(self) -> list[str]:
        """Summary lines about what was loaded; each importer says its own."""
        return []

    def summary(self) -> str:
        """A readable multi-line account of the import."""
        out = [
            f"Imported {self.path} in {self.seconds:.1f} s"
            + (f" ({self.encoding})" if self.encoding else ""),
            f"  rows read           {self.rows_read:>10,}",
            *(f"  dates: {label:<13}{how}" for label, how in self.date_orders.items()),
            *self.loaded_lines(),
            f"  rows skipped        {sum(self.skipped.values()):>10,}",
        ]
        out += [f"    {reason:<22}{n:>8,}" for reason, n in sorted(self.skipped.items())]
        out.append(f"  malformed rows      {self.malformed_rows:>10,}")
        out += [f"    {kind:<22}{n:>8,}" for kind, n in sorted(self.malformed.items())]
        if self.examples:
            out.append("  first malformed rows:")
            out += [f"    line {line}: {why}" for line, why in self.examples]
        if self.duplicates:
            out.append("  first repeated rows (loaded once):")
            out += [f"    line {line} repeats line {first}" for line, first in self.duplicates]
        return "\n".join(out)

    # -- bookkeeping used while importing ---------------------------------
    def note_dates(self, label: str, order) -> None:
        """Say how a date column's day/month values are read (careflow/importers/dates.py)."""
        if order.how != "not needed":
            self.date_orders[label] = order.describe()

    def _skip(self, reason: str, n: int) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def _bad(self, kind: str, line: int, why: str) -> None:
        self.malformed[kind] = self.malformed.get(kind, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((line, bounded(why)))

    def _repeated(self, line: int, first: int) -> None:
        self._skip("duplicate_row", 1)
        if len(self.duplicates) < MAX_EXAMPLES:
            self.duplicates.append((line, first))

    def _finish(self, seconds: float) -> None:
        self.examples.sort()
        self.duplicates.sort()
        self.seconds = seconds
