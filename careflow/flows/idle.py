"""Runs that found nothing to do, told apart in the Prefect UI's runs list.

The deferred follow-up runs every 15 minutes, the journey advance every 5 and the
reconciliation every hour; most of their runs find nothing due. Such a run ends
``Completed`` under the state name ``Idle`` (a Completed state with its own name: the UI draws it as
completed, and a runs filter on the state ``Completed`` leaves it out), with
the message ``Nothing due``; its name gets ``nothing due`` at the end and it is
tagged ``nothing-due``, so the runs list can be filtered either way
(docs/operators.md, "Runs that found nothing to do").
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Completed, State

#: the tag and state name of a run that found nothing to do
IDLE_TAG = "nothing-due"
IDLE_STATE = "Idle"


def idle(data: Any, message: str = "Nothing due") -> State:
    """The end of a run that found nothing to do: return it from the flow."""
    run_id = flow_run.id
    if run_id is not None:
        try:
            with get_client(sync_client=True) as client:
                client.update_flow_run(
                    run_id,
                    name=f"{flow_run.name} nothing due",
                    tags=sorted({*flow_run.tags, IDLE_TAG}),
                )
        except Exception as exc:  # a label is not worth failing a run for
            get_run_logger().warning("could not tag this run %s: %s", IDLE_TAG, exc)
    return Completed(name=IDLE_STATE, message=message, data=data)
