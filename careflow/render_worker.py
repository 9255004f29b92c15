"""Render worker processes: where marketers' templates run, under limits the OS enforces.

The sandbox (careflow/template_sandbox.py) stops runaway templates
cooperatively: a deadline check in every loop and macro, sizes predicted
before values are built. Neither can interrupt one long C call (comparing,
printing or serialising a huge or deeply nested value), and while such a
call runs it holds the interpreter lock, so every other thread of the
process, the one that handles SIGTERM among them, waits for it. A run could
neither finish nor stop, and kept its rows reserved.

So templates render in a worker process, and the caller only waits on a
pipe, which leaves the interpreter free:

- **Deadline.** The worker writes the index of the message it is rendering
  and when it started to shared memory. A message still rendering
  ``GRACE_SECONDS`` after ``CAREFLOW_RENDER_TIMEOUT_SECONDS`` gets its worker
  killed; that message is ``failed: template_error`` ("rendering took longer
  than 2 s") and a new worker renders the rest.
- **Memory.** The worker's address space is capped (``RLIMIT_AS``: its own
  size plus ``CAREFLOW_RENDER_MAX_MEMORY_MB``). Past it an allocation fails
  (a ``MemoryError``, that message's template_error); a worker that dies is
  the template_error of the message it was rendering.
- **Stopping.** While it waits, the caller's ``check_stop`` runs every
  ``POLL_SECONDS``; when it raises (a stopped run), the worker is killed
  whatever it is doing. Workers have a process group of their own (a Ctrl-C
  reaches the terminal's whole group: stopping is the caller's decision, and
  a worker killed by it would look like a template's crash) and are killed
  by the kernel when their parent goes.

The worker renders with careflow/template_env.py (``TemplateRunner``), the
environment the caller's ``Renderer`` (careflow/rendering.py) finds templates
in; this module does not know the caller.

Cost: workers start from a fork server that has imported this module and the
template environment, and stay alive between batches (up to ``MAX_IDLE`` idle
ones); messages travel ``CHUNK`` at a time, results come back a chunk at a
time. bench/README.md has the per-message figure.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from careflow.errors import CareflowError, TemplateError, TemplateLimitError
from careflow.template_env import TemplateRunner, out_of_memory

#: messages sent to a worker in one request
CHUNK = 200
#: how often a waiting caller checks for a stop and a message past its deadline
POLL_SECONDS = 0.05
#: how long past the render deadline the worker's own check may take before it is killed
GRACE_SECONDS = 0.25
#: idle workers kept for the next batches (the oldest goes first)
MAX_IDLE = 8

#: one message: ((field, template name or None), ...), locale, template context
Job = tuple[tuple[tuple[str, str | None], ...], str, dict]
#: what comes back for a message: its parts by field, or why it could not be rendered
Result = dict | TemplateError


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker renders with; workers are reused only for an equal configuration."""

    templates_dir: str
    default_locale: str
    timeout_seconds: float
    max_chars: int
    max_memory_mb: int

    def too_slow(self) -> TemplateLimitError:
        return TemplateLimitError(
            f"rendering took longer than {self.timeout_seconds:g} s "
            "(CAREFLOW_RENDER_TIMEOUT_SECONDS)"
        )

    def out_of_memory(self) -> str:
        return out_of_memory(self.max_memory_mb)


def render_jobs(
    config: WorkerConfig, jobs: Sequence[Job], check_stop: Callable[[], None] | None = None
) -> Iterator[Result]:
    """Render ``jobs`` in a worker process; yields one result per job, in order.

    ``check_stop`` is called between chunks and while waiting; whatever it
    raises stops the rendering (the worker is killed) and propagates.
    """
    if not jobs:
        return
    worker = _take(config)
    try:
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            results: list[Result | None] = [None] * len(chunk)
            todo = list(range(len(chunk)))
            while todo:
                if check_stop is not None:
                    check_stop()
                worker = worker or _Worker(config)
                worker.conn.send([chunk[i] for i in todo])
                outcome = worker.wait(config, check_stop)
                if isinstance(outcome, list):
                    for i, result in zip(todo, outcome, strict=True):
                        results[i] = result
                    break
                # That message stopped its worker; the others go again to a new one
                # (rendering has no side effects: those the killed worker did are redone).
                stuck, error = outcome
                results[todo.pop(stuck)] = error
                worker.kill()
                worker = None
            yield from results
    except BaseException:  # a stop, or the caller gave up: the worker may be busy
        if worker is not None:
            worker.kill()
        raise
    _give(config, worker)


class _Worker:
    """One render worker process, from the caller's side."""

    def __init__(self, config: WorkerConfig):
        ctx = _context()
        #: [index of the message being rendered, when it started (time.monotonic) or 0]
        self.progress = ctx.RawArray("d", 2)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, self.progress, config), name="careflow-render", daemon=True
        )
        # A Dask worker is a daemonic process, which multiprocessing forbids children so
        # none outlives it; a render worker cannot (it dies with its parent, _serve), so
        # the flag is lifted while this one starts.
        flags = multiprocessing.current_process()._config
        daemonic = flags.pop("daemon", None)
        try:
            self.process.start()
        finally:
            if daemonic is not None:
                flags["daemon"] = daemonic
        child.close()

    def wait(self, config: WorkerConfig, check_stop) -> list | tuple[int, TemplateError]:
        """The chunk's results, or (index of the message that stopped the worker, why)."""
        limit = config.timeout_seconds + GRACE_SECONDS
        while not self.conn.poll(POLL_SECONDS):
            if check_stop is not None:
                check_stop()
            started = self.progress[1]
            index = int(self.progress[0])
            if (
                started
                and time.monotonic() - started > limit
                and self.progress[1] == started  # still the same message
            ):
                return index, config.too_slow()
            if not self.process.is_alive():
                break
        try:
            return self.conn.recv()
        except (EOFError, OSError):  # the worker died: out of memory, or crashed
            self.process.join(1.0)
            if not self.progress[1]:  # before it rendered anything: not a template's doing
                raise CareflowError(
                    f"the render worker stopped (exit code {self.process.exitcode})"
                ) from None
            return int(self.progress[0]), TemplateLimitError(
                f"the render worker died rendering it (exit code {self.process.exitcode}): "
                f"{config.out_of_memory()} or crashed it"
            )

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


#: idle workers, oldest first, with the configuration each renders with
_idle: list[tuple[WorkerConfig, _Worker]] = []
_idle_lock = threading.Lock()


def _take(config: WorkerConfig) -> _Worker | None:
    with _idle_lock:
        for i in range(len(_idle) - 1, -1, -1):
            if _idle[i][0] == config:
                worker = _idle.pop(i)[1]
                if worker.process.is_alive():
                    return worker
                worker.kill()
    return None


def _give(config: WorkerConfig, worker: _Worker | None) -> None:
    if worker is None:
        return
    with _idle_lock:
        _idle.append((config, worker))
        retired = _idle[:-MAX_IDLE]
        del _idle[:-MAX_IDLE]
    for _, old in retired:
        old.kill()


@cache
def _context():
    """Workers fork from a server that has imported this module and with it the template
    environment (milliseconds, not the second a fresh interpreter takes); never from this
    process, whose other threads may hold locks a forked child would inherit held."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


# --- the worker -------------------------------------------------------------------------
def _serve(conn, progress, config: WorkerConfig) -> None:
    """A worker's life: render each request's jobs, send back their results, until the
    pipe closes."""
    os.setpgrp()  # signals for the caller's process group (Ctrl-C) are the caller's
    _die_with_parent()
    _cap_memory(config.max_memory_mb)
    renderer = TemplateRunner(
        config.templates_dir,
        config.default_locale,
        timeout_seconds=config.timeout_seconds,
        max_chars=config.max_chars,
        max_memory_mb=config.max_memory_mb,
    )
    while True:
        try:
            jobs = conn.recv()
        except (EOFError, ConnectionResetError):
            # the caller went; a reset when it left results unread (killed, or gave up)
            return
        renderer.forget()  # a template edited since the last request is read again
        results = []
        for index, (names, locale, context) in enumerate(jobs):
            progress[0] = index
            progress[1] = time.monotonic()
            try:
                results.append(renderer.render_names(names, locale, context))
            except TemplateError as exc:
                results.append(exc)
        progress[1] = 0.0
        conn.send(results)


def _cap_memory(megabytes: int) -> None:
    """Cap this process's address space at its present size plus ``megabytes``."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        with open("/proc/self/statm") as statm:
            own = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = own + megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent (the fork server, which exits
    with careflow) goes, even in the middle of a call that never returns."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
