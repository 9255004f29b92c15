"""How long work tells whoever is watching how far it has got, without knowing who.

Code that takes a while calls :func:`report` with a stage, how much is done
and, when known, the total (``report("birthday batches", 3, 12)``). Nothing
listens by default, so this costs a function call. The ``careflow`` command
listens while it runs a campaign and draws a progress bar in the terminal;
the Prefect UI has its own progress artifact (careflow/flows/campaign.py).

One listener per process, not a context variable: Prefect may run a flow
in a thread of its own, where a variable the command set would not be seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: ``listener(stage, done, total)``; total is None while unknown
Listener = Callable[[str, int, int | None], None]

_listener: Listener | None = None


def report(stage: str, done: int, total: int | None = None) -> None:
    """Tell the listener, if any, that ``done`` of ``total`` of ``stage`` are done."""
    listener = _listener
    if listener is not None:
        listener(stage, done, total)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send progress reports to ``listener`` for the duration of the block."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous
