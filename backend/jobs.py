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

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

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


class JobStoreError(RuntimeError):
    """The job store cannot be read or written; the message names the file and the fix."""


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


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, task_id INTEGER, key TEXT,"
    " status TEXT, state TEXT, spec TEXT, created_at REAL, owner TEXT)",
    "CREATE INDEX IF NOT EXISTS jobs_task ON jobs(task_id, status)",
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)",
)
_INSERT = (
    "INSERT INTO jobs (id, task_id, key, status, state, spec, created_at, owner)"
    " VALUES (?,?,?,?,?,?,?,?)"
)
_ACTIVE_SQL = "status IN ('queued', 'running')"
_LIVE_SQL = "status NOT IN ('failed', 'cancelled')"  # jobs that did or may still write


def _parse(state: str, spec: str) -> tuple[JobState, JobSpec]:
    """A stored row as objects; ValueError/TypeError/KeyError when unreadable."""
    return JobState(**json.loads(state)), JobSpec(**json.loads(spec))


class JobStore:
    """SQLite persistence of job states and specs (one short connection per call)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.locks_dir = self.path.parent / f"{self.path.stem}.locks"
        self.error: str | None = None  # why the store fails now (for /health), None when it works
        self._write_failed = False  # the failure was a write: only a write can clear it
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create(at_boot=True)
        except (sqlite3.Error, OSError) as exc:  # serve anyway: /health and /predict report it
            self._failed(exc, write=True)

    # ------------------------------------------------------------------ opening
    def _connect(self, create: bool = False) -> sqlite3.Connection:
        """A connection; without ``create`` a missing file is an error, never a new store."""
        uri = f"file:{quote(str(self.path))}?mode={'rwc' if create else 'rw'}"
        return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)

    def _create(self, at_boot: bool = False) -> None:
        """Open (creating if needed) and check the file, set up the tables; at boot a corrupt
        file is moved aside first. Serialized between processes by a lock file."""
        self.locks_dir.mkdir(exist_ok=True)
        with _flocked(self.locks_dir / "store.lock"):
            try:
                self._init_schema()
            except sqlite3.DatabaseError as exc:
                if not (at_boot and _is_corrupt(exc)):
                    raise
                self._move_aside(exc)
                self._init_schema()

    def _init_schema(self) -> None:
        with contextlib.closing(self._connect(create=True)) as c:
            bad = [r[0] for r in c.execute("PRAGMA quick_check").fetchall() if r[0] != "ok"]
            if bad:
                raise sqlite3.DatabaseError(f"integrity check failed: {'; '.join(bad[:3])}")
            c.execute("PRAGMA journal_mode=WAL")
            for sql in _SCHEMA:
                c.execute(sql)
            columns = {r[1] for r in c.execute("PRAGMA table_info(jobs)")}
            if "owner" not in columns:  # a store written by an older version
                c.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
                for job_id, state in c.execute("SELECT id, state FROM jobs").fetchall():
                    with contextlib.suppress(ValueError, AttributeError):
                        owner = json.loads(state).get("owner", "")
                        c.execute("UPDATE jobs SET owner=? WHERE id=?", (owner, job_id))

    def _move_aside(self, reason: BaseException) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for n in range(1, 100):  # two corrupt stores within a second: keep both
            if not target.exists():
                break
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        log.error(
            "job store %s is corrupt (%s): moved it aside to %s and started a fresh, empty store"
            " (the jobs it held are not resumed)",
            self.path,
            " ".join(str(reason).split()),  # one line
            target,
        )

    # ------------------------------------------------------------------ failures
    def _call(self, fn: Callable[[sqlite3.Connection], Any], *, write: bool) -> Any:
        """``fn`` on a fresh connection; a deleted store file is created again (once)."""
        for attempt in (0, 1):
            try:
                guard = self._lock if write else contextlib.nullcontext()
                with guard, contextlib.closing(self._connect()) as conn:
                    result = fn(conn)
            except (sqlite3.Error, OSError) as exc:
                if attempt == 0 and self._heal(exc):
                    continue
                raise self._failed(exc, write=write) from exc
            if self.error is not None and (write or not self._write_failed):
                log.warning("job store %s works again", self.path)
                self.error, self._write_failed = None, False
            return result
        raise AssertionError("unreachable")

    def _heal(self, exc: BaseException) -> bool:
        """Create the store again when its file (not its directory) is gone."""
        missing = not self.path.exists() or "no such table" in str(exc)
        if not missing or not self.path.parent.is_dir():
            return False
        try:
            self._create()
        except (sqlite3.Error, OSError):
            return False
        log.warning(
            "job store %s was missing (deleted while serving?): created it again; finished jobs"
            " are forgotten, running ones are saved again as they progress",
            self.path,
        )
        return True

    def _failed(self, exc: BaseException, *, write: bool) -> JobStoreError:
        message = self._describe(exc)
        if message != self.error:
            log.error("%s", message)
        self.error = message
        self._write_failed = self._write_failed or write
        return JobStoreError(message)

    def _describe(self, exc: BaseException) -> str:
        text = str(exc).lower()
        recovers = "; it recovers by itself once that is done"
        if not self.path.parent.is_dir():
            fix = (
                f"the directory {self.path.parent} (MODEL_DIR) is missing — deleted, or its "
                "volume is not mounted; restore it as a writable directory" + recovers
            )
        elif "full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
            fix = "free disk space on the volume that holds MODEL_DIR" + recovers
        elif "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
            fix = f"make {self.path.parent} and its files writable by the backend" + recovers
        elif "locked" in text:
            fix = "another process holds the store's write lock; check for a stuck backend"
        elif _is_corrupt(exc):
            fix = "restart the backend: it moves the corrupt file aside and starts a fresh store"
        else:
            fix = "make MODEL_DIR a writable local directory with free space" + recovers
        return (
            f"job store {self.path} failed ({type(exc).__name__}: {exc}); background jobs "
            f"cannot be saved or resumed. Fix: {fix}"
        )

    def check(self) -> str | None:
        """Why the store fails now (for /health), or None. Reads; after a failed write it also
        writes, so a store that works again is noticed."""
        try:
            if self.error is not None and self._write_failed:
                self._call(
                    lambda c: c.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('checked_at', ?)", (str(time.time()),)
                    ),
                    write=True,
                )
            else:
                self._call(
                    lambda c: c.execute("SELECT 1 FROM jobs LIMIT 1").fetchone(), write=False
                )
        except JobStoreError as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------ jobs
    def add(self, state: JobState, spec: JobSpec) -> None:
        self._call(lambda c: _insert(c, state, spec), write=True)

    def save(self, state: JobState, spec: JobSpec | None = None) -> bool:
        """Write ``state`` of a job this process owns; False when another process has taken it
        over. A row lost with a deleted store is added again when ``spec`` is given."""
        state.updated_at = time.time()

        def run(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE jobs SET status=?, state=? WHERE id=? AND owner IS ?",
                (state.status.value, json.dumps(asdict(state)), state.id, state.owner),
            )
            if cur.rowcount:
                return True
            row = c.execute("SELECT owner FROM jobs WHERE id=?", (state.id,)).fetchone()
            if row is None and spec is not None:
                _insert(c, state, spec)
            return row is None

        return self._call(run, write=True)

    def claim(self, state: JobState, previous_owner: str | None) -> bool:
        """Take over an active job from ``previous_owner``, saving ``state`` (already naming
        the new owner); False when another process claimed it first."""
        state.updated_at = time.time()
        return self._call(
            lambda c: (
                c.execute(
                    f"UPDATE jobs SET owner=?, status=?, state=? WHERE id=? AND owner IS ?"
                    f" AND {_ACTIVE_SQL}",
                    (
                        state.owner,
                        state.status.value,
                        json.dumps(asdict(state)),
                        state.id,
                        previous_owner,
                    ),
                ).rowcount
                == 1
            ),
            write=True,
        )

    def orphan_candidates(self) -> list[tuple[str, int | None, str, str | None, str, str]]:
        """Active jobs owned by other processes: (id, task_id, key, owner, state, spec)."""
        return self._call(
            lambda c: c.execute(
                f"SELECT id, task_id, key, owner, state, spec FROM jobs WHERE {_ACTIVE_SQL}"
                " AND owner IS NOT ? ORDER BY created_at",
                (PROCESS_ID,),
            ).fetchall(),
            write=False,
        )

    def newer_than(self, state: JobState) -> str | None:
        """The id of a job of the same task created after ``state``'s that did not fail or get
        cancelled (its prediction is, or will be, the newer one), or None."""
        if state.task_id is None:
            return None
        row = self._call(
            lambda c: c.execute(
                f"SELECT id FROM jobs WHERE task_id=? AND id<>? AND {_LIVE_SQL}"
                " AND (created_at>? OR (created_at=? AND id>?)) ORDER BY created_at DESC LIMIT 1",
                (state.task_id, state.id, state.created_at, state.created_at, state.id),
            ).fetchone(),
            write=False,
        )
        return None if row is None else row[0]

    def get(self, job_id: str) -> tuple[JobState, JobSpec] | None:
        row = self._call(
            lambda c: c.execute("SELECT state, spec FROM jobs WHERE id=?", (job_id,)).fetchone(),
            write=False,
        )
        if row is None:
            return None
        try:
            return _parse(*row)
        except (ValueError, TypeError, KeyError):
            log.warning("job %s: its stored state is unreadable", job_id)
            return None

    def list(self, limit: int = 50, status: str | None = None) -> list[JobState]:
        query = "SELECT state FROM jobs"
        args: tuple = ()
        if status:
            query += " WHERE status=?"
            args = (status,)
        query += " ORDER BY created_at DESC LIMIT ?"
        rows = self._call(lambda c: c.execute(query, (*args, limit)).fetchall(), write=False)
        out = []
        for (text,) in rows:
            with contextlib.suppress(ValueError, TypeError):
                out.append(JobState(**json.loads(text)))
        return out

    def active(self) -> list[tuple[JobState, JobSpec]]:
        rows = self._call(
            lambda c: c.execute(
                f"SELECT state, spec FROM jobs WHERE {_ACTIVE_SQL} ORDER BY created_at"
            ).fetchall(),
            write=False,
        )
        return [_parse(a, b) for a, b in rows]


def _insert(c: sqlite3.Connection, state: JobState, spec: JobSpec) -> None:
    c.execute(
        _INSERT,
        (
            state.id,
            state.task_id,
            state.key,
            state.status.value,
            json.dumps(asdict(state)),
            json.dumps(asdict(spec)),
            state.created_at,
            state.owner,
        ),
    )


def _is_corrupt(exc: BaseException) -> bool:
    """SQLite says the file is not a database or is damaged (not an I/O or lock problem)."""
    name = getattr(exc, "sqlite_errorname", None)
    if name is not None:
        return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB")
    return type(exc) is sqlite3.DatabaseError  # raised by our integrity check


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- process liveness
class _OwnLock:
    """This process's lock file in a locks folder, flocked for the process's lifetime."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / f"{PROCESS_ID}.lock"
        self.fd: int | None = None
        self.error: str | None = None  # why the lock could not be held last time

    def ensure(self) -> None:
        """Hold the lock, creating the file again if it vanished (its folder was deleted and
        restored); created under a temporary name so no scanner sees it unlocked."""
        try:
            if self.fd is not None and os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                return
        except FileNotFoundError:
            pass
        self.folder.mkdir(exist_ok=True)  # never MODEL_DIR itself: a missing volume stays missing
        tmp = self.folder / f".{PROCESS_ID}-{uuid.uuid4().hex[:8]}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())  # for people reading the folder
            os.replace(tmp, self.path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        old, self.fd = self.fd, fd
        if old is not None:
            os.close(old)


_OWN_LOCKS: dict[Path, _OwnLock] = {}
_OWN_LOCKS_GUARD = threading.Lock()
_OWNER_RE = re.compile(r"[0-9a-f]{32}")


def _hold_own_lock(folder: Path) -> bool:
    """Make sure this process holds its lock in ``folder``; False (logged) when it cannot."""
    folder = Path(os.path.abspath(folder))
    with _OWN_LOCKS_GUARD:
        own = _OWN_LOCKS.setdefault(folder, _OwnLock(folder))
        try:
            own.ensure()
        except OSError as exc:
            if own.error != str(exc):  # once per cause, not at every rescan
                log.error("cannot hold the job lock file %s: %s", own.path, exc)
            own.error = str(exc)
            return False
        own.error = None
    return True


def _owner_alive(folder: Path, owner: str | None) -> bool:
    """Whether the process ``owner`` still runs: it does while it holds its lock file. The
    lock file of a dead owner is removed."""
    if owner == PROCESS_ID:
        return True
    if not owner or not _OWNER_RE.fullmatch(owner):
        return False  # written by an older version, or unreadable
    path = folder / f"{owner}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale: its process is gone, and the id is never used again
        return False
    finally:
        os.close(fd)


def _sweep_stale_locks(folder: Path, limit: int = 1000) -> None:
    """Remove lock files of dead processes (and leftover temporary files)."""
    try:
        entries = sorted(folder.iterdir())[:limit]
    except OSError:
        return
    for entry in entries:
        if entry.suffix == ".lock" and _OWNER_RE.fullmatch(entry.stem):
            _owner_alive(folder, entry.stem)
        elif entry.suffix == ".tmp" and entry.name.startswith("."):
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > 60:
                    entry.unlink()


def _after_fork_in_child() -> None:
    """A forked child is another process: a new id, and no share in its parent's locks."""
    global PROCESS_ID, _OWN_LOCKS_GUARD
    PROCESS_ID = uuid.uuid4().hex
    _OWN_LOCKS_GUARD = threading.Lock()  # another thread may have held it at the fork
    for own in _OWN_LOCKS.values():
        if own.fd is not None:
            with contextlib.suppress(OSError):
                os.close(own.fd)
    _OWN_LOCKS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
        _hold_own_lock(store.locks_dir)  # before any job of ours is in the store

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
                id=uuid.uuid4().hex[:12], task_id=spec.task_id, key=spec.key, owner=PROCESS_ID
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
        _sweep_stale_locks(self.store.locks_dir)
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
        if not _hold_own_lock(self.store.locks_dir):
            return []  # without our own lock, others would take our jobs over: try again later
        try:
            rows = self.store.orphan_candidates()
        except JobStoreError:
            return []  # logged by the store and reported by /health; the watcher tries again
        resumed = []
        for job_id, task, key, owner, state_text, spec_text in rows:
            if job_id in self._jobs or _owner_alive(self.store.locks_dir, owner):
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
            state, spec = _parse(state_text, spec_text)
        except (ValueError, TypeError, KeyError) as exc:
            failed = JobState(id=job_id, task_id=task, key=key, status=JobStatus.FAILED,
                              owner=PROCESS_ID)  # fmt: skip
            failed.error = f"cannot be resumed after an interrupted run: unreadable state ({exc})"
            if self.store.claim(failed, owner):
                log.error("job %s (task %s): %s", job_id, task, failed.error)
            return False
        was = state.pid
        state.error = f"resumed after an interrupted run (was pid {was})"
        state.pid = os.getpid()
        state.owner = PROCESS_ID
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
        job.state.owner = PROCESS_ID
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
