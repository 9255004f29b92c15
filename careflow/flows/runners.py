"""Where a flow run's batch tasks run: threads of the flow's own process, or a Dask cluster.

Every flow that runs batches (careflow/flows/campaign.py, careflow/flows/care.py,
careflow/flows/deferred.py) names :class:`BatchTaskRunner`. Prefect copies a flow's
task runner when a run starts (``duplicate``), and that copy is chosen here
from the settings of the process running the flow, so the environment a
Prefect worker hands its runs decides, not the one a module was imported in
(the only choice a run's environment makes rather than its settings:
``BatchTaskRunner.duplicate`` says why):

- ``CAREFLOW_TASK_RUNNER=threads`` (the default): Prefect's thread pool;
- ``CAREFLOW_TASK_RUNNER=dask``: prefect-dask's ``DaskTaskRunner``, on the
  cluster at ``CAREFLOW_DASK_ADDRESS``, or without one on a LocalCluster of
  ``CAREFLOW_DASK_WORKERS`` processes started for the run and stopped after it.

On Dask a batch runs in another process, perhaps on another machine: it gets
only its (picklable) arguments and finds everything else in the database,
a dry run's batches what the others would take included (careflow/ledger/dry_run.py).
A stop request, which the thread runner's batches read from the flow's process, reaches
such batches through the run's row (careflow/flows/campaign.py, ``RunStopFlag``).
docs/production.md describes the topology.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from careflow.errors import ConfigError
from careflow.settings import Settings, load_settings

#: objects allocated between two young-generation collections in a process running batches
YOUNG_COLLECTION_EVERY = 10_000


def settle_heap() -> None:
    """Once a process is about to run batches: what it has built so far (modules,
    Prefect, the engine, templates) is moved out of the cyclic collector's sight
    (``gc.freeze``), and the young generation is collected every
    ``YOUNG_COLLECTION_EVERY`` allocations instead of 700. A batch makes tens of
    thousands of short-lived objects; at Python's defaults the collector scanned
    the start-up heap over and over, about a fifth of a message's time on the outbox
    (bench/README.md). Idempotent; garbage is still collected."""
    if gc.get_threshold()[0] != YOUNG_COLLECTION_EVERY:
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_EVERY)


def batch_task_runner(settings: Settings) -> TaskRunner:
    """The task runner ``settings`` ask for (not started)."""
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.effective_batch_concurrency)
    from prefect_dask import DaskTaskRunner  # dask takes a while to import: only when used

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # The LocalCluster's scheduler and nannies live in the flow's process: their INFO
    # lines (a traceback among them when a worker's connection closes at shutdown)
    # would fill the run's log. Warnings and errors still show.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    return _dask_on_this_api()(
        cluster_kwargs={
            "n_workers": settings.dask_workers,
            "threads_per_worker": settings.dask_threads_per_worker,
            "processes": True,
            # one cluster per flow run: its dashboard on a free loopback port (logged), so
            # runs side by side never fight over 8787
            "dashboard_address": "127.0.0.1:0",
        }
    )


def _dask_on_this_api() -> type[TaskRunner]:
    """prefect-dask's runner, whose LocalCluster workers report to the flow's Prefect API.

    A batch on a Dask worker takes the flow's Prefect settings with it. With no
    Prefect server configured (the embedded default), those name no API, and each
    worker process started a temporary server of its own on the same database: a few
    seconds each, and under concurrent batches one failed to start and the run ended
    in a traceback. So each batch is submitted with the address of the server the
    flow run uses. (A cluster at CAREFLOW_DASK_ADDRESS may be on other machines, where
    a loopback address means nothing: it needs a Prefect server, docs/production.md.)
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    class DaskOnThisAPI(DaskTaskRunner):
        def submit(self, *args: Any, **kwargs: Any):
            if PREFECT_API_URL.value():
                return super().submit(*args, **kwargs)
            url = str(get_client(sync_client=True).api_url).rstrip("/")
            with temporary_settings(updates={PREFECT_API_URL: url}):
                return super().submit(*args, **kwargs)

    return DaskOnThisAPI


class BatchTaskRunner(ThreadPoolTaskRunner):
    """The task runner of every flow that runs batches: threads or Dask, as the settings
    of the process running the flow say when a run starts (module docs)."""

    def duplicate(self) -> TaskRunner:  # type: ignore[override]
        """The one place a run's process environment, not the run's settings, decides.

        Prefect calls this as a flow run starts, before the flow's function runs and
        so before the run's settings exist (the function reads them, or is given
        them, and makes the run's ``RunPlan``). The environment is also what a
        Prefect worker hands each run (a deployment's job variables), so the
        runner follows where the run is, not where a module was imported. A flow
        function given other settings (a test, a script) still runs its batches
        on the runner its environment names; everything else about a batch comes
        from the run's settings (``RunPlan.settings``).
        """
        try:
            settings = load_settings()
        except ConfigError:
            # the run itself reports the bad variable in one line, before selecting anyone
            return ThreadPoolTaskRunner(max_workers=1)
        return batch_task_runner(settings)
