"""SQLite persistence of job states and specs (``MODEL_DIR/jobs.sqlite3``)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from backend.jobs import locks
from backend.jobs.locks import flocked
from backend.jobs.records import JobSpec, JobState, JobStoreError, parse_row

log = logging.getLogger(__name__)

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
        with flocked(self.locks_dir / "store.lock"):
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
                (locks.PROCESS_ID,),
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
            return parse_row(*row)
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
        return [parse_row(a, b) for a, b in rows]


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
