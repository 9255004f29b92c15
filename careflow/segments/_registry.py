"""The segment registry: each segment declared once, in its own file, read by everything else.

A :class:`Segment` entry holds what careflow needs to know about a segment:
the function that builds its select, the pydantic model of its parameters,
the once-per-run preparation (if any) and whether it selects nothing
without it, and one line saying what it selects. ``careflow/segments/__init__.py``
registers the built-in segments; a test or a plug-in registers its own with
one :func:`register` call, and validation, building, preparing, the CLI's
listings and the contract tests all pick it up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Connection

from careflow.errors import ConfigError
from careflow.segments._params import SegmentParams, check


@dataclass(frozen=True)
class Segment:
    """Everything careflow needs to know about one segment."""

    name: str
    #: ``build(as_of, params, *, id_range=None) -> Select`` with ``params`` an instance of
    #: ``params`` below, already validated; a segment that cares about the time of day takes
    #: ``at`` (the run's instant) as well
    build: Callable[..., Select]
    #: the parameter model: types, bounds, allowed values and meanings
    params: type[SegmentParams]
    #: one line: who the segment selects
    description: str
    #: ``prepare(conn, as_of, params) -> dict``: whole-population work done once per run, its
    #: (small) result merged into the parameters every batch gets
    prepare: Callable[[Connection, date, Any], dict] | None = None
    #: the segment selects nothing until ``prepare`` has run (clv's model needs everyone)
    needs_prepare: bool = False
    #: offered to campaigns and listed (``careflow segment list``, the contract suite);
    #: False for a segment careflow builds for itself (a journey's send step)
    listed: bool = True

    def __post_init__(self) -> None:
        if self.needs_prepare and self.prepare is None:
            raise ConfigError(f"segment {self.name!r} needs a prepare but declares none")

    def check(self, values: Mapping | None) -> SegmentParams:
        """``values`` validated by the segment's model; ConfigError (one line) otherwise."""
        return check(self.name, self.params, values if values is not None else {})


_REGISTRY: dict[str, Segment] = {}


def register(segment: Segment, *, replace: bool = False) -> Segment:
    """Add a segment. Registering a name twice is an error unless ``replace``."""
    if segment.name in _REGISTRY and not replace:
        raise ConfigError(f"segment {segment.name!r} is already registered")
    _REGISTRY[segment.name] = segment
    return segment


def unregister(name: str) -> None:
    """Remove a segment (tests that register a fictitious one clean up with this)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Every listed segment, in registration order (``get`` finds the unlisted ones too)."""
    return [name for name, entry in _REGISTRY.items() if entry.listed]


def get(name: str) -> Segment:
    """The entry for ``name``; ConfigError naming the known segments otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown segment {name!r}; known segments: {', '.join(sorted(names()))}"
        ) from None


__all__ = ["Segment", "get", "names", "register", "unregister"]
