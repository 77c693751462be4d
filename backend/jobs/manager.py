"""Running jobs in this process: a thread pool, resumption of orphans, the newer-click rule."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from backend.jobs import locks
from backend.jobs.locks import hold_own_lock, owner_alive, sweep_stale_locks
from backend.jobs.records import (
    ACTIVE,
    FINAL,
    JobSpec,
    JobState,
    JobStatus,
    JobStoreError,
    parse_row,
)
from backend.jobs.store import JobStore

log = logging.getLogger(__name__)

P = TypeVar("P")  # what the submitter hands the runner in this process (lost on a crash)


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
# writer(spec, prediction, is_current) → LS prediction id, or None when not written;
# is_current() says whether the job is still its task's newest (checked around each write)
Writer = Callable[[JobSpec, dict[str, Any], Callable[[], bool]], int | None]


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
        rescan_s: float = 10.0,
    ):
        self.store = store
        self.runner = runner
        self.writer = writer
        self.on_done = on_done
        self.rescan_s = rescan_s
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tam-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        hold_own_lock(store.locks_dir)  # before any job of ours is in the store

    # ------------------------------------------------------------------ submission
    def submit(self, spec: JobSpec, payload: P | None = None) -> Job[P]:
        """Start ``spec`` unless the same job is already active; supersede older jobs of the task.

        Raises :class:`JobStoreError` (nothing started or superseded) when the store fails.
        """
        with self._lock:
            for job in self._jobs.values():
                if job.state.key == spec.key and job.state.status in ACTIVE:
                    return job
            state = JobState(
                id=uuid.uuid4().hex[:12], task_id=spec.task_id, key=spec.key, owner=locks.PROCESS_ID
            )
            job = Job(state, spec, payload)
            self.store.add(job.state, spec)
            for other in self._jobs.values():
                same_task = spec.task_id is not None and other.state.task_id == spec.task_id
                if same_task and other.state.status in ACTIVE:
                    other.cancel.set()
                    self._finish(
                        other, JobStatus.SUPERSEDED, "a newer request for this task replaced it"
                    )
            self._jobs[job.state.id] = job
            self._prune()
        self._pool.submit(self._run, job)
        return job

    def resume_interrupted(self) -> list[str]:
        """Take over the jobs left queued/running by processes that died, and keep doing so
        every ``rescan_s`` seconds in a watcher thread; returns the ids resumed now."""
        sweep_stale_locks(self.store.locks_dir)
        resumed = self._scan()
        if self._watcher is None and self.rescan_s > 0:
            self._watcher = threading.Thread(target=self._watch, name="tam-job-rescan", daemon=True)
            self._watcher.start()
        return resumed

    def _watch(self) -> None:
        while not self._stop.wait(self.rescan_s):
            try:
                self._scan()
            except Exception:  # the watcher must outlive any one bad scan
                log.exception("looking for interrupted jobs failed")

    def _scan(self) -> list[str]:
        """One pass over the active jobs of other processes: claim and restart the orphans."""
        if not hold_own_lock(self.store.locks_dir):
            return []  # without our own lock, others would take our jobs over: try again later
        try:
            rows = self.store.orphan_candidates()
        except JobStoreError:
            return []  # logged by the store and reported by /health; the watcher tries again
        resumed = []
        for job_id, task, key, owner, state_text, spec_text in rows:
            if job_id in self._jobs or owner_alive(self.store.locks_dir, owner):
                continue
            try:
                if self._take_over(job_id, task, key, owner, state_text, spec_text):
                    resumed.append(job_id)
            except JobStoreError:
                break
        return resumed

    def _take_over(
        self,
        job_id: str,
        task: int | None,
        key: str,
        owner: str | None,
        state_text: str,
        spec_text: str,
    ) -> bool:
        """Claim one orphaned job and run it again (or mark it failed/superseded)."""
        try:
            state, spec = parse_row(state_text, spec_text)
        except (ValueError, TypeError, KeyError) as exc:
            failed = JobState(id=job_id, task_id=task, key=key, status=JobStatus.FAILED,
                              owner=locks.PROCESS_ID)  # fmt: skip
            failed.error = f"cannot be resumed after an interrupted run: unreadable state ({exc})"
            if self.store.claim(failed, owner):
                log.error("job %s (task %s): %s", job_id, task, failed.error)
            return False
        was = state.pid
        state.error = f"resumed after an interrupted run (was pid {was})"
        state.pid = os.getpid()
        state.owner = locks.PROCESS_ID
        state.status = JobStatus.QUEUED
        state.deliver_to_ls = True  # whoever asked got a partial answer
        if not self.store.claim(state, owner):
            return False  # another process of this MODEL_DIR claimed it first
        job = Job(state, spec)
        with self._lock:
            self._jobs[state.id] = job
        newer = self._newer(job)
        if newer is not None:
            self._finish(
                job, JobStatus.SUPERSEDED, f"not resumed: a newer request (job {newer}) replaced it"
            )
            return False
        self._pool.submit(self._run, job)
        log.warning("job %s (task %s): resuming after an interrupted run (was pid %s)",
                    state.id, state.task_id, was)  # fmt: skip
        return True

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
    def _save(self, job: Job) -> bool:
        """Save the job's state; False (and the job cancelled) when another process took it
        over. A failing store does not stop the job: /health reports it."""
        try:
            if self.store.save(job.state, job.spec):
                return True
        except JobStoreError:
            return True
        if not job.cancel.is_set():
            job.cancel.set()
            log.warning("job %s: another process took it over; stopping here", job.state.id)
        return False

    def _newer(self, job: Job) -> str | None:
        """A newer job of the same task in the store (any process), or None (also when the
        store cannot tell; the write-back checks again, strictly)."""
        try:
            return self.store.newer_than(job.state)
        except JobStoreError:
            return None

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.finished.set()
            return
        job.state.status = JobStatus.RUNNING
        job.state.pid = os.getpid()
        job.state.owner = locks.PROCESS_ID
        if not self._save(job):
            job.finished.set()
            return
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
                if not self._save(job):
                    return
                newer = self._newer(job)  # a newer click handled by another process
                if newer is not None and not job.cancel.is_set():
                    job.cancel.set()
                    self._finish(
                        job, JobStatus.SUPERSEDED, f"a newer request (job {newer}) replaced it"
                    )
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
                self._finish_cancelled(job)
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
                self._finish_cancelled(job)
                return
            job.prediction = prediction
            deliver = job.state.deliver_to_ls
        if deliver and self.writer is not None and not self._write_back(job, prediction):
            return
        if job.cancel.is_set():  # superseded while writing: keep that status
            self._finish_cancelled(job)
            return
        if self.on_done is not None:  # before anyone waiting is woken up: no race on the cache
            self.on_done(job)
        self._finish(job, JobStatus.DONE)

    def _write_back(self, job: Job, prediction: dict[str, Any]) -> bool:
        """Write the prediction to Label Studio unless a newer job of the task exists (then the
        job is superseded); False when the job ended here."""
        assert self.writer is not None
        try:
            newer = self.store.newer_than(job.state)
        except JobStoreError as exc:
            self._finish(job, JobStatus.FAILED, f"not written to Label Studio: {exc}")
            return False
        if newer is None:

            def is_current() -> bool:
                return not job.cancel.is_set() and self.store.newer_than(job.state) is None

            try:
                job.state.ls_prediction_id = self.writer(job.spec, prediction, is_current)
            except Exception as exc:
                log.exception("job %s: writing the prediction to Label Studio failed", job.state.id)
                self._finish(job, JobStatus.FAILED, f"writing to Label Studio failed: {exc}")
                return False
            if job.state.ls_prediction_id is not None:
                return True
            newer = self._newer(job)
        if newer is None:
            return True  # nothing to write to (no Label Studio connection)
        log.info("job %s (task %s): not written, job %s is newer", job.state.id,
                 job.state.task_id, newer)  # fmt: skip
        self._finish(
            job,
            JobStatus.SUPERSEDED,
            f"finished after a newer request for this task (job {newer}); not written to Label"
            " Studio, so it cannot replace the newer prediction",
        )
        return False

    def _finish_cancelled(self, job: Job) -> None:
        self._finish(job, job.state.status if job.state.status in FINAL else JobStatus.CANCELLED)

    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        job.state.status = status
        if error:
            job.state.error = error
        job.state.eta_s = 0.0 if status is JobStatus.DONE else job.state.eta_s
        self._save(job)
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
        self._stop.set()
        for job in self._jobs.values():
            job.cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
