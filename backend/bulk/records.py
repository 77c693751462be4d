"""What each task of a bulk run ends as, and the run's report (table and JSON)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class Outcome(Enum):
    DONE = "done"  # a prediction was written
    SKIPPED = "skipped"  # our prediction already carries these prompts and model version
    NO_PROMPTS = "no-prompts"  # nothing to propagate: listed, not touched
    FAILED = "failed"  # the reason says why; retried first where that can help
    NOT_RUN = "not-run"  # the run was interrupted before the task finished


class Failure(Enum):
    """Whether another attempt can help."""

    PERMANENT = "permanent"  # a bad prompt, an unreadable frame: the same again
    TRANSIENT = "transient"  # a timeout, Label Studio unreachable, a worker that died


@dataclass
class TaskResult:
    """A task's outcome as a worker reports it (small: no masks)."""

    task_id: int
    outcome: Outcome
    reason: str = ""
    failure: Failure | None = None
    source: str = ""  # annotation / draft: where the prompts came from
    frames: int = 0  # frames in the task's clip
    computed: int = 0  # frames propagated by the tracker
    seconds: float = 0.0
    read_s: float = 0.0  # reading the task (and drafts) from Label Studio
    compute_s: float = 0.0  # frames fetched and decoded, keyframes segmented, propagated
    write_s: float = 0.0  # the prediction written, our older ones deleted
    cpu_s: float = 0.0  # CPU time the worker process used on the task (all its threads)
    signature: str = ""
    prediction_id: int | None = None
    worker: str = ""
    attempts: int = 1

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        out["failure"] = self.failure.value if self.failure else None
        return out


@dataclass
class BulkReport:
    """The run: every task's last result, totals and throughput."""

    project: int
    model_version: str = ""
    engine: str = ""
    workers: int = 0
    address: str = "local"
    started: str = ""
    seconds: float = 0.0
    interrupted: bool = False
    worker_restarts: int = 0
    results: dict[int, TaskResult] = field(default_factory=dict)

    def add(self, result: TaskResult) -> None:
        self.results[result.task_id] = result

    def counts(self) -> Counter:
        return Counter(r.outcome.value for r in self.results.values())

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.results.values() if r.outcome is Outcome.DONE)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def by_outcome(self, outcome: Outcome) -> list[TaskResult]:
        return sorted((r for r in self.results.values() if r.outcome is outcome),
                      key=lambda r: r.task_id)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "model_version": self.model_version,
            "engine": self.engine,
            "workers": self.workers,
            "address": self.address,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "worker_restarts": self.worker_restarts,
            "frames": self.frames,
            "frames_per_s": round(self.frames_per_s, 3),
            "counts": {o.value: self.counts().get(o.value, 0) for o in Outcome},
            "tasks": [r.to_json() for _, r in sorted(self.results.items())],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)  # a report is never half-written either

    def table(self) -> str:
        """The final summary: counts with frames, then every failed and unprompted task."""
        counts = self.counts()
        lines = [f"{'status':<12}{'tasks':>7}{'frames':>9}"]
        for o in Outcome:
            frames = sum(r.frames for r in self.by_outcome(o))
            lines.append(f"{o.value:<12}{counts.get(o.value, 0):>7}{frames:>9}")
        lines.append(f"{self.frames} frames in {self.seconds:.1f} s = {self.frames_per_s:.2f} "
                     f"frames/s with {self.workers} worker(s)")  # fmt: skip
        for r in self.by_outcome(Outcome.FAILED):
            lines.append(f"failed  task {r.task_id} (after {r.attempts} attempt(s)): {r.reason}")
        none = [str(r.task_id) for r in self.by_outcome(Outcome.NO_PROMPTS)]
        if none:
            lines.append(f"no prompts (not touched): tasks {', '.join(none)}")
        not_run = [str(r.task_id) for r in self.by_outcome(Outcome.NOT_RUN)]
        if not_run:
            lines.append(f"not run (interrupted): tasks {', '.join(not_run)}")
        return "\n".join(lines)
