"""The Ray side of a bulk run: worker actors (one engine each) and the driver's dispatch loop.

The driver holds task ids and small results only. Each actor gets one task at a time; when
it finishes, the next id goes to it. A failed task that another attempt can help goes back
to the end of the queue (so usually to another worker); an actor that dies is replaced and
its task queued again. Ctrl-C once: no new task starts, the running ones finish (each writes
its prediction in one API call); twice: the workers are killed at once, and a killed worker
has written either its whole prediction or nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from backend.bulk.records import BulkReport, Failure, Outcome, TaskResult
from backend.bulk.worker import TaskWorker
from backend.config import Settings

log = logging.getLogger(__name__)
WORKER_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


@dataclass(frozen=True)
class RunOptions:
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    retries: int = 1  # further attempts of a task whose failure may be transient
    worker_deaths: int = 2  # a task whose worker died this often more is reported failed
    force: bool = False  # recompute even tasks whose prediction carries the same signature
    start_timeout_s: float = 600.0  # the longest the workers may take to be placed and ready


class WorkerStartError(RuntimeError):
    """The workers could not be placed on the cluster in time."""


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    pid: int
    host: str
    model_version: str
    engine: str


class BulkWorker:
    """A Ray actor around :class:`TaskWorker`: the engine is built once, in ``__init__``."""

    def __init__(self, settings: Settings, label_config: str, name: str, threads: int = 1):
        _limit_threads(threads)
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        self.worker = TaskWorker(settings, label_config, name=name)

    def info(self) -> WorkerInfo:
        w = self.worker
        return WorkerInfo(w.name, os.getpid(), socket.gethostname(), w.model_version,
                          w.engine.name)  # fmt: skip

    def process(self, task_id: int, force: bool = False) -> TaskResult:
        return self.worker.process(task_id, force=force)


def _limit_threads(threads: int) -> None:
    """One worker's CPU share: OpenCV and torch use as many threads as its CPUs."""
    import cv2

    cv2.setNumThreads(max(1, threads))
    try:
        import torch

        torch.set_num_threads(max(1, threads))
    except ImportError:  # the classical engine needs no torch
        pass


@dataclass
class _Slot:
    """A worker actor and the task it runs (None when idle)."""

    name: str
    actor: Any
    info: WorkerInfo | None = None
    task: int | None = None
    ref: Any = None


@dataclass
class _TaskState:
    attempts: int = 0
    deaths: int = 0
    last: TaskResult | None = None


Hook = Callable[[int, int, WorkerInfo], None]  # (task id, attempt, worker) on each dispatch
Progress = Callable[[TaskResult, BulkReport], None]


@dataclass
class BulkRun:
    """One project's run on the connected Ray cluster (``ray.init`` done by the caller)."""

    settings: Settings
    label_config: str
    project: int
    options: RunOptions = field(default_factory=RunOptions)
    on_dispatch: Hook | None = None
    on_result: Progress | None = None

    def __post_init__(self) -> None:
        self._actor_cls = ray.remote(BulkWorker)
        self._spawned = 0
        self._slots: list[_Slot] = []
        self.report = BulkReport(self.project, workers=self.options.workers)

    # ------------------------------------------------------------------ workers
    def _spawn(self) -> _Slot:
        self._spawned += 1
        name = f"worker-{self._spawned}"
        opts = self.options
        actor = self._actor_cls.options(
            num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker, max_restarts=0,
            max_task_retries=0, name=None,
        ).remote(self.settings, self.label_config, name, max(1, int(opts.cpus_per_worker)))  # fmt: skip
        return _Slot(name, actor)

    def start_workers(self) -> list[WorkerInfo]:
        """Start the workers and wait until each has built its engine (its error if none)."""
        self._slots = [self._spawn() for _ in range(self.options.workers)]
        refs = [s.actor.info.remote() for s in self._slots]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.options.start_timeout_s)
        if len(ready) < len(refs):
            self.stop_workers()
            opts = self.options
            raise WorkerStartError(
                f"{len(refs) - len(ready)} of {len(refs)} workers were not ready within "
                f"{opts.start_timeout_s:g} s: the cluster may lack {opts.cpus_per_worker:g} "
                f"CPU(s) and {opts.gpus_per_worker:g} GPU(s) free for each (see `ray status`)"
            )
        infos = ray.get(refs)
        for slot, info in zip(self._slots, infos, strict=True):
            slot.info = info
        first = infos[0]
        self.report.model_version, self.report.engine = first.model_version, first.engine
        log.info("%d worker(s) ready: engine %s, model_version %s, on %s", len(infos),
                 first.engine, first.model_version, sorted({i.host for i in infos}))  # fmt: skip
        return infos

    def _replace(self, slot: _Slot) -> None:
        """A dead worker's place goes to a new one (its engine loads in the background)."""
        self.report.worker_restarts += 1
        new = self._spawn()
        slot.name, slot.actor, slot.info = new.name, new.actor, None
        slot.task = slot.ref = None

    def stop_workers(self) -> None:
        for slot in self._slots:
            ray.kill(slot.actor, no_restart=True)

    # ------------------------------------------------------------------ the loop
    def run(self, task_ids: Iterable[int]) -> BulkReport:
        """Every task to done, skipped, no-prompts or failed (each exactly once)."""
        t0 = time.monotonic()
        self.report.started = datetime.now(UTC).isoformat(timespec="seconds")
        queue: deque[int] = deque(dict.fromkeys(task_ids))
        states = {tid: _TaskState() for tid in queue}
        if not self._slots:
            self.start_workers()
        stopping = False
        try:
            while queue or any(s.task is not None for s in self._slots):
                try:
                    if not stopping:
                        self._dispatch(queue, states)
                    self._collect(queue, states, timeout=0.5)
                except KeyboardInterrupt:
                    if stopping:
                        raise
                    stopping = True
                    running = [s.task for s in self._slots if s.task is not None]
                    log.warning("interrupted: no new task starts; %d running task(s) finish "
                                "(Ctrl-C again to stop them now)", len(running))  # fmt: skip
                if stopping and all(s.task is None for s in self._slots):
                    break
        except KeyboardInterrupt:
            log.warning("stopping the workers now; their tasks are not written")
            self.stop_workers()
        finally:
            self.report.seconds = time.monotonic() - t0
        for tid, state in states.items():
            if tid not in self.report.results:
                self.report.interrupted = True
                last = state.last.reason if state.last else ""
                reason = (
                    f"interrupted (an earlier attempt failed: {last})" if last else "interrupted"
                )
                self.report.add(TaskResult(tid, Outcome.NOT_RUN, reason=reason,
                                           attempts=state.attempts))  # fmt: skip
        return self.report

    def _dispatch(self, queue: deque[int], states: dict[int, _TaskState]) -> None:
        for slot in self._slots:
            if slot.task is not None or not queue:
                continue
            tid = queue.popleft()
            state = states[tid]
            state.attempts += 1
            slot.task, slot.ref = tid, slot.actor.process.remote(tid, self.options.force)
            if self.on_dispatch is not None:
                info = slot.info or WorkerInfo(slot.name, -1, "", "", "")
                self.on_dispatch(tid, state.attempts, info)

    def _collect(self, queue: deque[int], states: dict[int, _TaskState], timeout: float) -> None:
        busy = {s.ref: s for s in self._slots if s.ref is not None}
        if not busy:
            return
        ready, _ = ray.wait(list(busy), num_returns=1, timeout=timeout)
        for ref in ready:
            slot = busy[ref]
            tid, state = slot.task, states[slot.task]
            try:
                result: TaskResult = ray.get(ref)
            except WORKER_LOST as exc:
                self._worker_lost(slot, tid, state, queue, exc)
                continue
            except RayTaskError as exc:  # the actor raised outside process(): report it
                result = TaskResult(tid, Outcome.FAILED, _short(exc), Failure.TRANSIENT,
                                    worker=slot.name)  # fmt: skip
            slot.task = slot.ref = None
            if slot.info is None:
                slot.info = _try_info(slot)
            result = dataclasses.replace(result, attempts=state.attempts)
            state.last = result
            retry = (result.outcome is Outcome.FAILED and result.failure is Failure.TRANSIENT
                     and state.attempts <= self.options.retries)  # fmt: skip
            if retry:
                log.info("task %s: attempt %d failed (%s); queued again", tid, state.attempts,
                         result.reason)  # fmt: skip
                queue.append(tid)
                continue
            self._finish(result)

    def _worker_lost(self, slot: _Slot, tid: int, state: _TaskState, queue, exc) -> None:
        state.deaths += 1
        log.warning("%s died while running task %s (%s); starting a new worker", slot.name, tid,
                    type(exc).__name__)  # fmt: skip
        self._replace(slot)
        if state.deaths > self.options.worker_deaths:
            reason = f"its worker died {state.deaths} time(s) ({type(exc).__name__})"
            self._finish(TaskResult(tid, Outcome.FAILED, reason, Failure.TRANSIENT,
                                    attempts=state.attempts))  # fmt: skip
            return
        state.attempts -= 1  # a lost worker does not use up the task's own attempts
        queue.append(tid)

    def _finish(self, result: TaskResult) -> None:
        self.report.add(result)
        if self.on_result is not None:
            self.on_result(result, self.report)


def _try_info(slot: _Slot) -> WorkerInfo | None:
    try:
        return ray.get(slot.actor.info.remote(), timeout=5)
    except Exception:  # noqa: BLE001 - informational only
        return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[-400:] if len(text) > 400 else text


def connect(address: str | None, *, num_cpus: int | None = None, quiet: bool = True) -> str:
    """Join the cluster at ``address``, or start a local one on this machine (None); a Ray
    runtime this process already started is used as it is ("existing")."""
    if ray.is_initialized():
        return "existing"
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet,
                              "configure_logging": False}  # fmt: skip
    if address:
        ray.init(address=address, **kwargs)
        return address
    ray.init(address="local", num_cpus=num_cpus, **kwargs)  # never a cluster running here
    return "local"
