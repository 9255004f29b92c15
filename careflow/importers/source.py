"""Reading an import file: compression, encoding, header, chunks with line numbers.

Encodings: a file is read as UTF-8 unless it says otherwise with a byte
order mark (UTF-8, UTF-16 and UTF-32 BOMs are recognised) or the caller
names its encoding (``careflow import ... --encoding cp1252``). The whole
file is decoded once before anything is parsed, so a file in another
encoding stops with the line and byte that gave it away instead of being
loaded as mojibake. Guessing between single-byte encodings (latin-1,
cp1252, cp1251...) is left to the person who knows where the file came
from: every byte sequence is valid in latin-1, so a guess would never fail,
only be silently wrong.

Rows pandas refuses (more fields than the header) are reported to the
ImportReport with their physical line number; ``line_of`` maps a record's
position to its line around them.
"""

from __future__ import annotations

import codecs
import gzip
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
from pandas.errors import ParserWarning

from careflow.errors import DataError
from careflow.importers.report import ImportReport, bounded, shown

READ_CHUNK = 100_000
_DECODE_BLOCK = 1 << 20
_BAD_LINE = re.compile(r"line (\d+): expected (\d+) fields, saw (\d+)")
# UTF-32 first: its little-endian BOM starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class Source:
    """An import file, checked readable: how to open it and its column names."""

    path: Path
    compression: str | None
    encoding: str
    #: "detected" (UTF-8 or a BOM) or "given" (--encoding)
    encoding_source: str
    header: list[str]
    #: whether any NUL character occurs (PostgreSQL cannot store one in text)
    has_nul: bool = False


def open_source(path: str | Path, encoding: str | None = None) -> Source:
    """Check ``path`` is a readable CSV in ``encoding`` (or in UTF-8 / its BOM's).

    Raises DataError, with the line number where it can, when the file is
    missing, not in that encoding, a broken gzip, or has no header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"import file not found: {shown(path, 200)}")
    compression = _compression(path)
    with _raw(path, compression) as fh:
        try:
            bom = fh.read(4)
        except (OSError, EOFError) as exc:
            raise DataError(bounded(f"{path}: cannot be read: {exc}")) from exc
    detected = next((name for mark, name in _BOMS if bom.startswith(mark)), None)
    if encoding:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise DataError(
                f"unknown encoding {shown(encoding)}: try utf-8, cp1252 or latin-1"
            ) from None
        # a BOM is not part of the text; "utf-8" would keep it in the first column's name
        chosen = "utf-8-sig" if name == "utf-8" and detected == "utf-8-sig" else encoding
        how = "given"
    else:
        chosen, how = detected or "utf-8", "detected"
    has_nul = _check_decodes(path, compression, chosen, given=how == "given")
    return Source(path, compression, chosen, how, _header(path, compression, chosen), has_nul)


def _compression(path: Path) -> str | None:
    """gzip when the name says so or the first bytes do (exports get renamed)."""
    if path.suffix.lower() == ".gz":
        return "gzip"
    with path.open("rb") as fh:
        return "gzip" if fh.read(2) == b"\x1f\x8b" else None


def _raw(path: Path, compression: str | None) -> BinaryIO:
    return gzip.open(path, "rb") if compression == "gzip" else path.open("rb")


def _check_decodes(path: Path, compression: str | None, encoding: str, *, given: bool) -> bool:
    """Decode the whole file once; DataError naming the line of the first bad byte.

    Returns whether the text has a NUL character, so the row checks can skip
    looking for one in files that have none (nearly all).
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines_before = 0
    has_nul = False
    with _raw(path, compression) as fh:
        while True:
            try:
                block = fh.read(_DECODE_BLOCK)
            except (OSError, EOFError) as exc:  # truncated or corrupt gzip
                raise DataError(
                    bounded(f"{path}: cannot read past line {lines_before + 1}: {exc}")
                ) from exc
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise DataError(_not_in(path, encoding, given, lines_before, exc)) from None
            lines_before += text.count("\n")
            has_nul = has_nul or "\x00" in text
            if not block:
                return has_nul


def _not_in(path: Path, encoding: str, given: bool, lines_before: int, exc) -> str:
    data: bytes = exc.object
    line = lines_before + data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
    bad = " ".join(f"0x{b:02X}" for b in data[exc.start : exc.end][:4])
    start = data.rfind(b"\n", 0, exc.start) + 1
    end = data.find(b"\n", exc.start)
    # What the line says in the commonest single-byte encoding, as a hint.
    hint = data[start : end if end >= 0 else len(data)].decode("cp1252", errors="replace")
    if given:
        return bounded(
            f"{path}: line {line} is not valid {encoding} (byte {bad}); "
            f"check --encoding (as cp1252 the line reads {shown(hint.strip(), 60)})"
        )
    return bounded(
        f"{path} is not UTF-8: line {line} has byte {bad} (as cp1252 it reads "
        f"{shown(hint.strip(), 60)}); name the file's encoding with --encoding, "
        "e.g. --encoding cp1252 (Windows, Excel) or --encoding latin-1"
    )


def _header(path: Path, compression: str | None, encoding: str) -> list[str]:
    try:
        frame = pd.read_csv(path, nrows=0, compression=compression, encoding=encoding)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, EOFError) as exc:
        raise DataError(bounded(f"{path}: not a readable CSV file ({exc})")) from exc
    return [str(c).strip() for c in frame.columns]


def read_chunks(
    source: Source, report: ImportReport, chunksize: int = READ_CHUNK
) -> Iterator[tuple[pd.DataFrame, int, list[int]]]:
    """Yield (chunk, position of its first record, refused lines so far), all as text.

    Refused rows (wrong field count) are counted in ``report`` as read and
    malformed as they are met. Values are strings, never NaN: an empty
    field is "".
    """
    unrelated: list[warnings.WarningMessage] = []
    bad_lines: list[int] = []
    seen = 0
    with warnings.catch_warnings(record=True) as caught:
        # The C parser reports rows with too many fields only as warnings; we
        # collect them to report their line numbers instead of losing them.
        # (No usecols=: with it pandas silently truncates such rows.) Other
        # warnings are re-issued below. catch_warnings is process-global, so
        # imports are not meant to run in parallel threads of one process.
        warnings.simplefilter("always")
        reader = pd.read_csv(
            source.path,
            compression=source.compression,
            encoding=source.encoding,
            encoding_errors="strict",  # checked by open_source: nothing is replaced
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            on_bad_lines="warn",
            chunksize=chunksize,
        )
        with reader:
            for chunk in _chunks_of(reader, source.path):
                chunk.columns = [str(c).strip() for c in chunk.columns]
                for w in caught:
                    # One warning may list several refused lines.
                    refused = list(_BAD_LINE.finditer(str(w.message)))
                    if not (issubclass(w.category, ParserWarning) and refused):
                        unrelated.append(w)
                    for found in refused:
                        line, want, got = map(int, found.groups())
                        bad_lines.append(line)
                        report.rows_read += 1
                        report._bad(
                            "wrong_field_count", line, f"expected {want} fields, found {got}"
                        )
                caught.clear()
                report.rows_read += len(chunk)
                yield chunk, seen, bad_lines
                seen += len(chunk)
    for w in unrelated:  # not ours to swallow
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _chunks_of(reader, path: Path) -> Iterator[pd.DataFrame]:
    """The reader's chunks; a file broken past repair (open quote) is a DataError."""
    try:
        yield from reader
    except (pd.errors.ParserError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(bounded(f"{path}: cannot read past this point: {exc}")) from exc


def line_of(row: int, bad_lines: list[int]) -> int:
    """Physical line of the ``row``-th record (0-based), stepping over refused lines.

    Exact unless quoted fields span lines or the file has blank lines.
    """
    line = row + 2
    for bad in sorted(bad_lines):
        if bad <= line:
            line += 1
        else:
            break
    return line


def lines_of(positions, bad_lines: list[int]):
    """``line_of`` over an array of record positions (vectorised when nothing was refused)."""
    if not bad_lines:
        return positions + 2
    return [line_of(int(r), bad_lines) for r in positions]


def column_values(source: Source, column: str, chunksize: int = READ_CHUNK) -> Iterator[pd.Series]:
    """One column's non-empty values in chunks, indexed by line number: a first look at a
    column before its rows are read (careflow/importers/dates.py decides a date order).

    Line numbers are exact unless quoted fields span lines, the file has blank lines or
    rows pandas refuses come before."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParserWarning)  # refused rows: read_chunks reports them
        reader = pd.read_csv(
            source.path,
            compression=source.compression,
            encoding=source.encoding,
            usecols=lambda c: str(c).strip() == column,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            on_bad_lines="skip",
            chunksize=chunksize,
        )
        seen = 0
        with reader:
            for chunk in _chunks_of(reader, source.path):
                values = chunk.iloc[:, 0]
                values.index = range(seen + 2, seen + 2 + len(values))
                seen += len(chunk)
                yield values[values != ""]
