"""Background propagation jobs: durable, cancellable, resumable, never half-written.

An interactive or batch ``/predict`` answers within ``PREDICT_BUDGET_S`` with
the keyframe masks plus every frame propagated so far; the rest goes on in a
:class:`JobManager` worker. When a job whose answer was partial finishes, the
full prediction replaces ours in Label Studio (create the new one, then delete
our older ones — one atomic API call each, so LS never holds a half prediction)
and lands in the result cache, so the next ``/predict`` with the same prompts
answers instantly. A job never writes when a newer job of the same task exists
(see :meth:`JobStore.newer_than`): an older click cannot replace a newer one.

State lives in SQLite (``MODEL_DIR/jobs.sqlite3``): status, progress, ETA,
error text, the process that owns the job and everything needed to run it
again. Each process holds an exclusive ``flock`` on its own file
``MODEL_DIR/jobs.locks/<process id>.lock`` for as long as it lives; the kernel
releases it the moment the process dies (even by ``kill -9``), so a job whose
owner's lock can be taken is orphaned. Orphans are claimed atomically in SQLite
(exactly one process of those sharing ``MODEL_DIR`` wins each) and run again
from scratch; one that cannot be resumed is marked ``failed`` with the reason.
Share one ``MODEL_DIR`` between processes of one machine only (SQLite and
``flock`` need a local disk).

A corrupt store found at start is moved aside and replaced by a fresh one. A
store that fails while serving (its directory deleted, disk full, …) raises
:class:`JobStoreError` (HTTP 503) and is reported by :meth:`JobStore.check`
until it works again; a store file deleted under a running server is created
again on the next call.
"""

from __future__ import annotations

from typing import Any

from backend.jobs import locks
from backend.jobs.manager import Job, JobManager
from backend.jobs.records import ACTIVE, FINAL, JobSpec, JobState, JobStatus, JobStoreError
from backend.jobs.store import JobStore

__all__ = [
    "ACTIVE",
    "FINAL",
    "Job",
    "JobManager",
    "JobSpec",
    "JobState",
    "JobStatus",
    "JobStore",
    "JobStoreError",
]


def __getattr__(name: str) -> Any:
    """``PROCESS_ID`` read through to :mod:`backend.jobs.locks` (a fork gives the child a new one)."""
    if name == "PROCESS_ID":
        return locks.PROCESS_ID
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
