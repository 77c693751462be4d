"""Background propagation jobs: durable, cancellable, resumable, never half-written.

An interactive or batch ``/predict`` answers within ``PREDICT_BUDGET_S`` with
the keyframe masks plus every frame propagated so far; the rest goes on in a
:class:`JobManager` worker. When a job whose answer was partial finishes, the
full prediction replaces ours in Label Studio (create the new one, then delete
the older ones of the same model version — one atomic API call each, so LS
never holds a half prediction) and lands in the result cache, so the next
``/predict`` with the same prompts answers instantly.

State lives in SQLite (``MODEL_DIR/jobs.sqlite3``): status, progress, ETA,
error text and everything needed to run the job again. A job found ``queued``
or ``running`` by a process that did not start it (the server was killed) is
resumed from scratch; one that fails again is marked ``failed`` with the
reason. With several backend replicas, point them at one ``MODEL_DIR`` on a
shared disk only if it supports SQLite locking; otherwise give each replica its
own ``MODEL_DIR`` (jobs are per replica).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    """A job's life: queued → running → one of the final states."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SUPERSEDED)
PROCESS_ID = uuid.uuid4().hex  # distinguishes this process from an earlier one with the same pid
P = TypeVar("P")  # what the submitter hands the runner in this process (lost on a crash)


@dataclass
class JobSpec:
    """Everything needed to run (or re-run after a crash) one propagation."""

    task_id: int | None
    key: str  # prompt/task fingerprint: equal keys are duplicate requests
    urls: list[str]
    label_config: str
    prompts: dict[str, Any]  # PromptSet as JSON (see backend.prompts.prompts_to_json)
    answer_labels: list[str]
    model_version: str
    session: dict[str, Any] | None = None  # the session key and prompts, to resume from


@dataclass
class JobState:
    id: str
    task_id: int | None
    key: str
    status: JobStatus = JobStatus.QUEUED
    frames_done: int = 0
    frames_total: int = 0
    eta_s: float | None = None
    error: str | None = None
    deliver_to_ls: bool = False
    ls_prediction_id: int | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    owner: str = ""  # PROCESS_ID of the process running it (pids get reused in containers)

    def __post_init__(self) -> None:
        self.status = JobStatus(self.status)  # a plain string when read back from the store

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        d.pop("pid")
        d.pop("owner")
        d["progress"] = round(self.frames_done / self.frames_total, 4) if self.frames_total else 0.0
        return d


class JobStore:
    """SQLite persistence of job states and specs (one short connection per call)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._conn() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, task_id INTEGER, key TEXT,"
                " status TEXT, state TEXT, spec TEXT, created_at REAL)"
            )
            c.execute("CREATE INDEX IF NOT EXISTS jobs_task ON jobs(task_id, status)")

    def _conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def add(self, state: JobState, spec: JobSpec) -> None:
        with self._lock, self._conn() as c:
            c.execute(
                "INSERT INTO jobs VALUES (?,?,?,?,?,?,?)",
                (
                    state.id,
                    state.task_id,
                    state.key,
                    state.status.value,
                    json.dumps(asdict(state)),
                    json.dumps(asdict(spec)),
                    state.created_at,
                ),
            )

    def save(self, state: JobState) -> None:
        state.updated_at = time.time()
        with self._lock, self._conn() as c:
            c.execute(
                "UPDATE jobs SET status=?, state=? WHERE id=?",
                (state.status.value, json.dumps(asdict(state)), state.id),
            )

    def get(self, job_id: str) -> tuple[JobState, JobSpec] | None:
        with self._conn() as c:
            row = c.execute("SELECT state, spec FROM jobs WHERE id=?", (job_id,)).fetchone()
        return (
            None if row is None else (JobState(**json.loads(row[0])), JobSpec(**json.loads(row[1])))
        )

    def list(self, limit: int = 50, status: str | None = None) -> list[JobState]:
        query = "SELECT state FROM jobs"
        args: tuple = ()
        if status:
            query += " WHERE status=?"
            args = (status,)
        query += " ORDER BY created_at DESC LIMIT ?"
        with self._conn() as c:
            rows = c.execute(query, (*args, limit)).fetchall()
        return [JobState(**json.loads(r[0])) for r in rows]

    def active(self) -> list[tuple[JobState, JobSpec]]:
        with self._conn() as c:
            rows = c.execute(
                "SELECT state, spec FROM jobs WHERE status IN (?,?) ORDER BY created_at",
                tuple(s.value for s in ACTIVE),
            ).fetchall()
        return [(JobState(**json.loads(a)), JobSpec(**json.loads(b))) for a, b in rows]


class Job(Generic[P]):
    """A live job in this process: its durable state and spec, the runner's ``payload``
    (handed over by the submitter; None for a job resumed after a crash) and its result."""

    def __init__(self, state: JobState, spec: JobSpec, payload: P | None = None):
        self.state = state
        self.spec = spec
        self.payload = payload
        self.cancel = threading.Event()
        self.finished = threading.Event()
        self.lock = threading.Lock()
        self.prediction: dict[str, Any] | None = None
        self.exception: BaseException | None = None  # why it failed, re-raised to the requester


Runner = Callable[[Job, Callable[[], None]], dict[str, Any]]
Writer = Callable[[JobSpec, dict[str, Any]], int | None]


class JobManager(Generic[P]):
    """Runs jobs on a small thread pool; deduplicates, supersedes and resumes them."""

    def __init__(
        self,
        store: JobStore,
        runner: Runner,
        *,
        writer: Writer | None = None,
        workers: int = 1,
        on_done: Callable[[Job], None] | None = None,
    ):
        self.store = store
        self.runner = runner
        self.writer = writer
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tam-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ submission
    def submit(self, spec: JobSpec, payload: P | None = None) -> Job[P]:
        """Start ``spec`` unless the same job is already active; supersede older jobs of the task."""
        with self._lock:
            for job in self._jobs.values():
                if job.state.key == spec.key and job.state.status in ACTIVE:
                    return job
            for job in self._jobs.values():
                same_task = spec.task_id is not None and job.state.task_id == spec.task_id
                if same_task and job.state.status in ACTIVE:
                    job.cancel.set()
                    self._finish(
                        job, JobStatus.SUPERSEDED, "a newer request for this task replaced it"
                    )
            state = JobState(
                id=uuid.uuid4().hex[:12], task_id=spec.task_id, key=spec.key, owner=PROCESS_ID
            )
            job = Job(state, spec, payload)
            self._jobs[job.state.id] = job
            self.store.add(job.state, spec)
            self._prune()
        self._pool.submit(self._run, job)
        return job

    def resume_interrupted(self) -> list[str]:
        """Restart jobs left queued/running by a process that died; returns their ids."""
        resumed = []
        for state, spec in self.store.active():
            if state.owner == PROCESS_ID:
                continue  # ours, still running here
            if state.pid != os.getpid() and _pid_alive(state.pid):
                continue  # another live worker process owns it
            job = Job(state, spec)
            state.error = f"resumed after an interrupted run (was pid {state.pid})"
            state.pid = os.getpid()
            state.owner = PROCESS_ID
            state.status = JobStatus.QUEUED
            state.deliver_to_ls = True  # whoever asked got a partial answer
            with self._lock:
                self._jobs[state.id] = job
            self.store.save(state)
            self._pool.submit(self._run, job)
            resumed.append(state.id)
            log.warning(
                "job %s (task %s): resuming after an interrupted run", state.id, state.task_id
            )
        return resumed

    # ------------------------------------------------------------------ queries
    def get(self, job_id: str) -> JobState | None:
        job = self._jobs.get(job_id)
        if job is not None:
            return job.state
        found = self.store.get(job_id)
        return None if found is None else found[0]

    def live(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def load(self) -> str:
        """How busy the workers are, in words (for "busy" messages)."""
        counts = self.counts()
        return (
            f"{counts.get('running', 0)} propagation(s) running, {counts.get('queued', 0)} queued"
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for job in list(self._jobs.values()):
            status = job.state.status.value
            out[status] = out.get(status, 0) + 1
        return out

    # ------------------------------------------------------------------ execution
    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.finished.set()
            return
        job.state.status = JobStatus.RUNNING
        job.state.pid = os.getpid()
        job.state.owner = PROCESS_ID
        self.store.save(job.state)
        t0 = time.perf_counter()
        last_save = [0.0]
        last_log = [t0]

        def progress() -> None:
            now = time.perf_counter()
            done, total = job.state.frames_done, job.state.frames_total
            if done and total:
                job.state.eta_s = round((now - t0) / done * (total - done), 1)
            if now - last_save[0] > 1.0 or done == total:
                last_save[0] = now
                self.store.save(job.state)
            if now - last_log[0] > 10.0:
                last_log[0] = now
                log.info(
                    "job %s (task %s): %d/%d frames, ETA %.0fs",
                    job.state.id,
                    job.state.task_id,
                    done,
                    total,
                    job.state.eta_s or 0.0,
                )

        try:
            prediction = self.runner(job, progress)
        except Exception as exc:  # a job failure must never take the worker down
            if job.cancel.is_set():
                self._finish(
                    job, job.state.status if job.state.status in FINAL else JobStatus.CANCELLED
                )
            else:
                job.exception = exc
                log.warning(
                    "job %s failed: %s: %s",
                    job.state.id,
                    type(exc).__name__,
                    exc,
                    exc_info=not isinstance(exc, ValueError),  # bad input needs no traceback
                )
                self._finish(job, JobStatus.FAILED, f"{type(exc).__name__}: {exc}")
            return
        with job.lock:
            if job.cancel.is_set():
                self._finish(
                    job, job.state.status if job.state.status in FINAL else JobStatus.CANCELLED
                )
                return
            job.prediction = prediction
            deliver = job.state.deliver_to_ls
        if deliver and self.writer is not None:
            try:
                job.state.ls_prediction_id = self.writer(job.spec, prediction)
            except Exception as exc:
                log.exception("job %s: writing the prediction to Label Studio failed", job.state.id)
                self._finish(job, JobStatus.FAILED, f"writing to Label Studio failed: {exc}")
                return
        if self.on_done is not None:  # before anyone waiting is woken up: no race on the cache
            self.on_done(job)
        self._finish(job, JobStatus.DONE)

    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        job.state.status = status
        if error:
            job.state.error = error
        job.state.eta_s = 0.0 if status is JobStatus.DONE else job.state.eta_s
        self.store.save(job.state)
        job.finished.set()
        log.info(
            "job %s (task %s): %s, %d/%d frames%s",
            job.state.id,
            job.state.task_id,
            status.value,
            job.state.frames_done,
            job.state.frames_total,
            f" ({error})" if error else "",
        )

    def _prune(self, keep: int = 64) -> None:
        finished = [j for j in self._jobs.values() if j.state.status in FINAL]
        for job in finished[: max(0, len(finished) - keep)]:
            self._jobs.pop(job.state.id, None)

    def shutdown(self) -> None:
        for job in self._jobs.values():
            job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
