"""What every segment's parameter model shares, and how a bad value becomes one line.

Each segment declares its parameters as a ``SegmentParams`` subclass in its
own file: types, bounds, allowed values and a description per field. A
value the model refuses becomes a ``ConfigError`` naming the segment, the
parameter and what is allowed::

    segment 'dormant': days must be a whole number from 1 to 3650 (got -5)

What is "allowed" is worked out from the field's type and bounds, so the
message cannot drift from the check; a field whose rule is not a plain type
or bound says it in ``json_schema_extra={"allowed": ...}``. Rules that tie
two parameters together (``max_days`` above ``days``) raise ``ValueError``
with the whole sentence from a model validator.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from careflow.errors import ConfigError

M = TypeVar("M", bound="SegmentParams")


class SegmentParams(BaseModel):
    """Base of every segment's parameters: unknown names are errors, numbers are finite.

    Fields marked ``json_schema_extra={"internal": True}`` are filled in by
    careflow itself (``careflow.segments.prepare``), not by a person; listings and
    "unknown parameter" hints leave them out.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    @classmethod
    def public_fields(cls) -> dict[str, FieldInfo]:
        """The parameters a person sets, in declaration order."""
        return {n: f for n, f in cls.model_fields.items() if not _extra(f).get("internal")}


def check(segment: str, model: type[M], values: Mapping[str, Any]) -> M:
    """``values`` validated by ``model``; ConfigError (one line) naming what to fix."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"segment {segment!r}: parameters must be a mapping of name to value "
            f"(got {_shown(values)})"
        )
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(f"segment {segment!r}: {problems(model, values, exc)}") from None


def problems(model: type[SegmentParams], values: Mapping[str, Any], exc: ValidationError) -> str:
    """Every problem in ``exc`` as one line: one clause per parameter."""
    said: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        name = str(loc[0]) if loc else ""
        if name in said:
            continue  # one clause per parameter, however many list items failed
        if err["type"] == "extra_forbidden":
            said[name] = _unknown(model, name)
        elif not loc or name not in model.model_fields or err["type"] == "assertion_error":
            said[name] = str(err["msg"]).removeprefix("Value error, ")
        else:
            allowed = describe(model.model_fields[name])
            said[name] = f"{name} must be {allowed} (got {_shown(values.get(name))})"
    return "; ".join(said.values())


def describe(field: FieldInfo) -> str:
    """What a field accepts, in words: 'a whole number from 1 to 3650'."""
    extra = _extra(field)
    if "allowed" in extra:
        return extra["allowed"]
    text = _describe_type(field.annotation, field.metadata)
    if field.default is None and _is_optional(field.annotation):
        text += ", or null"
    return text


def _describe_type(annotation: Any, metadata: list) -> str:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if _is_optional(annotation) and len(args) == 1:
        annotation = args[0]
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        shortest = next((m.min_length for m in metadata if isinstance(m, at.MinLen)), 0)
        what = "one or more" if shortest else "any"
        if get_origin(item) is Literal:
            options = [str(a) for a in get_args(item)]
            return f"a list of {what} of {', '.join(options)}, e.g. [{', '.join(options[:2])}]"
        return f"a list of {what} {_describe_type(item, [])}"
    if annotation is bool:
        return "true or false"
    if annotation in (int, float):
        noun = "a whole number" if annotation is int else "a number"
        return noun + _bounds(metadata)
    if annotation is str:
        return "text"
    return f"a {getattr(annotation, '__name__', annotation)}"


def _bounds(metadata: list) -> str:
    low = next((m for m in metadata if isinstance(m, at.Ge | at.Gt)), None)
    high = next((m for m in metadata if isinstance(m, at.Le | at.Lt)), None)
    if isinstance(low, at.Ge) and isinstance(high, at.Le):
        return f" from {low.ge} to {high.le}"
    parts = []
    if low is not None:
        parts.append(f"at least {low.ge}" if isinstance(low, at.Ge) else f"above {low.gt}")
    if high is not None:
        parts.append(f"at most {high.le}" if isinstance(high, at.Le) else f"below {high.lt}")
    return (" " + " and ".join(parts)) if parts else ""


def _unknown(model: type[SegmentParams], name: str) -> str:
    known = list(model.public_fields())
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    takes = ", ".join(known) if known else "none"
    return f"unknown parameter {name!r}{hint}; parameters: {takes}"


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def _extra(field: FieldInfo) -> dict:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _shown(value: Any) -> str:
    """A value as the person wrote it, cut short so the message stays one line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["SegmentParams", "check", "describe", "problems"]
