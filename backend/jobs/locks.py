"""Process liveness for jobs shared through one ``MODEL_DIR``: each process holds an exclusive
``flock`` on ``jobs.locks/<PROCESS_ID>.lock`` for as long as it lives (the kernel releases it
when the process dies, even by ``kill -9``), so a job whose owner's lock can be taken is
orphaned."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PROCESS_ID = uuid.uuid4().hex  # distinguishes this process from an earlier one with the same pid


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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


def hold_own_lock(folder: Path) -> bool:
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


def owner_alive(folder: Path, owner: str | None) -> bool:
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


def sweep_stale_locks(folder: Path, limit: int = 1000) -> None:
    """Remove lock files of dead processes (and leftover temporary files)."""
    try:
        entries = sorted(folder.iterdir())[:limit]
    except OSError:
        return
    for entry in entries:
        if entry.suffix == ".lock" and _OWNER_RE.fullmatch(entry.stem):
            owner_alive(folder, entry.stem)
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
