"""Running a session's plan within a request's time budget: the keyframes in the request,
the propagation as a background job (:mod:`backend.jobs`), finished frames handed to the
caller's collector as they come (for partial answers)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from backend.engine import Engine
from backend.frames import FrameSource
from backend.jobs import Job
from backend.session import InteractiveSession, Prepared
from backend.types import FramePrediction

Out = TypeVar("Out")  # the caller's collector of finished frames


class BusyError(RuntimeError):
    """The engine stayed busy past the request's time budget; the message says what to do."""


@dataclass
class SessionRun(Generic[Out]):
    """One planned run of a session, as a job carries it."""

    session: InteractiveSession
    prepared: Prepared
    frames: FrameSource
    cache_key: Hashable
    out: Out


def prepare_run(
    engine: Engine,
    session: InteractiveSession,
    frames: FrameSource,
    *,
    answer: Iterable[int],
    cache_key: Hashable,
    deadline: float,
    busy: Callable[[], str],
) -> Prepared:
    """Plan the session's next run and segment its keyframes, waiting for the engine until
    ``deadline`` (monotonic seconds) or its ``busy_timeout_s``; :class:`BusyError` with
    ``busy()`` as message after."""
    wait = max(0.0, deadline - time.monotonic())
    if engine.busy_timeout_s is not None:
        wait = min(wait, engine.busy_timeout_s)
    lock = engine.segmenter_lock
    if not lock.acquire(timeout=wait):
        raise BusyError(busy())
    try:
        return session.prepare(engine, frames, answer=answer, cache_key=cache_key)
    finally:
        lock.release()


def propagate_run(
    engine: Engine,
    run: SessionRun,
    job: Job,
    progress: Callable[[], None],
    add: Callable[[FramePrediction], None],
) -> int:
    """Propagate ``run`` in ``job``'s worker thread: each finished frame goes to ``add`` under
    the job's lock, progress counts the reused frames as done. Returns the frames computed.
    When it returns, the session holds the run as its last one."""
    plan_frames = len(run.prepared.plan.frames)
    reused = run.session.num_frames - plan_frames
    with job.lock:
        job.state.frames_total = run.session.num_frames
        job.state.frames_done = reused
    computed = 0
    for fp in run.session.propagate(
        engine, run.frames, run.prepared, cache_key=run.cache_key, should_stop=job.cancel.is_set
    ):
        computed += 1
        with job.lock:
            add(fp)
            job.state.frames_done = reused + computed
        progress()
    return computed
