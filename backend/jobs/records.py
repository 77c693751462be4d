"""What a job is: its status, the spec that runs it again, its durable state."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


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
    owner: str = ""  # locks.PROCESS_ID of the process running it (pids get reused in containers)

    def __post_init__(self) -> None:
        self.status = JobStatus(self.status)  # a plain string when read back from the store

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = str(self.status)
        d.pop("pid")
        d.pop("owner")
        d["progress"] = round(self.frames_done / self.frames_total, 4) if self.frames_total else 0.0
        return d


def parse_row(state: str, spec: str) -> tuple[JobState, JobSpec]:
    """A stored row as objects; ValueError/TypeError/KeyError when unreadable."""
    return JobState(**json.loads(state)), JobSpec(**json.loads(spec))
